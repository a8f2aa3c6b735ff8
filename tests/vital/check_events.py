"""Validates change events with Vital's own Python SDK (`vital` on PyPI): the typed webhook
models a team leaving Vital already uses in its handler.

Usage: python3 check_events.py FILE_OR_FOLDER...   (JSON-lines files of the files sink, or
JSON files holding one envelope or a list of envelopes; a line may wrap the envelope as
{"id", "event"}). Prints one JSON object: per event type, the model used, the count, and the
first validation errors, the declared fields left out; the types without a model. Exits 1 when any event of a type Vital
models fails validation, 2 on unreadable input.
"""
import json
import pathlib
import sys

import pydantic
import vital.types as vt


def model_for(event_type: str):
    """The SDK model of an event type, or None when Vital defines none."""
    parts = event_type.split(".")
    if event_type == "provider.connection.created":
        return vt.ClientFacingProviderConnectionCreatedEvent
    if event_type == "provider.connection.error":
        return vt.ClientFacingProviderConnectionErrorEvent
    if len(parts) == 4 and parts[1] == "data":
        camel = "".join(p.capitalize() for p in parts[2].split("_"))
        if parts[0] == "daily" and parts[3] in ("created", "updated"):
            return getattr(vt, f"ClientFacing{camel}Changed", None)
        if parts[0] == "historical" and parts[3] == "created":
            return getattr(vt, f"ClientFacing{camel}HistoricalPullCompleted", None)
    return None


def declared_but_absent(model, env):
    """Fields the event's data model (and, for time series, its sample model) declares that
    the event leaves out (Vital sends them, null when it has nothing)."""
    import typing

    data_model = model.model_fields["data"].annotation
    data = env.get("data") or {}
    fields = getattr(data_model, "model_fields", {})
    absent = [fields[k].alias or k for k in fields if (fields[k].alias or k) not in data]
    samples = data.get("data") if isinstance(data, dict) else None
    if "data" in fields and isinstance(samples, list) and samples:
        for item in typing.get_args(fields["data"].annotation):
            for cls in typing.get_args(item) or [item]:
                inner = getattr(cls, "model_fields", None)
                if inner:
                    absent += ["data[]." + (inner[k].alias or k) for k in inner if (inner[k].alias or k) not in samples[0]]
                    break
    return absent


def envelopes(path: pathlib.Path):
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        text = f.read_text()
        try:
            whole = json.loads(text)
            items = whole if isinstance(whole, list) else [whole]
        except json.JSONDecodeError:
            items = [json.loads(line) for line in text.splitlines() if line.strip()]
        for item in items:
            yield f, item.get("event", item) if isinstance(item, dict) else item


def main(paths):
    report = {"types": {}, "without_model": {}, "events": 0, "invalid": 0}
    for arg in paths:
        for f, env in envelopes(pathlib.Path(arg)):
            report["events"] += 1
            et = env.get("event_type", "<none>")
            model = model_for(et)
            if model is None:
                report["without_model"][et] = report["without_model"].get(et, 0) + 1
                continue
            entry = report["types"].setdefault(et, {"model": model.__name__, "count": 0, "invalid": 0, "errors": [], "absent": []})
            entry["count"] += 1
            for name in declared_but_absent(model, env):
                if name not in entry["absent"]:
                    entry["absent"].append(name)
            try:
                model.model_validate(env)
            except pydantic.ValidationError as e:
                entry["invalid"] += 1
                report["invalid"] += 1
                if len(entry["errors"]) < 5:
                    for err in e.errors()[:3]:
                        loc = ".".join(str(x) for x in err["loc"])
                        entry["errors"].append(f"{f.name}: {loc}: {err['msg']} (got {str(err.get('input'))[:80]})")
    print(json.dumps(report, indent=1, sort_keys=True))
    return 1 if report["invalid"] else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except (OSError, ValueError) as e:
        print(f"check_events: {e}", file=sys.stderr)
        sys.exit(2)
