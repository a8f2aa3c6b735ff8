"""Validates REST read responses with Vital's own Python SDK (`vital` on PyPI): each body is
parsed with the response model the SDK's client method for that path returns, the type a
program reading Vital's API already uses.

Usage: python3 check_reads.py FILE...   (JSON files holding a list of {"path", "body"}; `path`
is `summary/<kind>` or `timeseries/<resource>/grouped`, as in Vital's URLs without the user).
The model of `summary/<kind>` is the return type of `vital.<kind>.client.<Kind>Client.get`;
that of `timeseries/<resource>/grouped` the return type of
`vital.vitals.client.VitalsClient.<resource>_grouped` (or, where the SDK has no such method,
the type `Grouped<Resource>Response`). Prints one JSON object: per path, the model, the count,
the first validation errors and the fields the model declares (on the items of the list) that
the bodies leave out; the paths without a model. Exits 1 when any body fails validation, 2 on
unreadable input.
"""
import importlib
import json
import sys
import typing

import pydantic
import vital.types as vt

# Vital's names for the resources this program also calls `weight` and `fat`.
ALIASES = {"weight": "body_weight", "fat": "body_fat"}


def camel(name: str) -> str:
    return "".join(p.capitalize() for p in name.split("_"))


def sync_client(module):
    """The module's synchronous client class (not Async..., not Raw...)."""
    for name in dir(module):
        cls = getattr(module, name)
        if isinstance(cls, type) and name.endswith("Client") and not name.startswith(("Async", "Raw")):
            if cls.__module__ == module.__name__:
                return cls
    return None


def returned(cls, method: str):
    fn = getattr(cls, method, None) if cls else None
    if fn is None:
        return None
    return typing.get_type_hints(fn).get("return")


def model_for(path: str):
    """The SDK's response model of a read path, or None when the SDK has none."""
    parts = path.split("/")
    if len(parts) == 2 and parts[0] == "summary":
        try:
            module = importlib.import_module(f"vital.{parts[1]}.client")
        except ImportError:
            return None
        return returned(sync_client(module), "get")
    if len(parts) == 3 and parts[0] == "timeseries" and parts[2] == "grouped":
        name = ALIASES.get(parts[1], parts[1])
        module = importlib.import_module("vital.vitals.client")
        return returned(sync_client(module), f"{name}_grouped") or getattr(vt, f"Grouped{camel(name)}Response", None)
    return None


def item_models(annotation):
    """The pydantic models inside a `List[X]`, `Optional[List[X]]`, `Dict[str, List[X]]`..."""
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return [annotation]
    out = []
    for arg in typing.get_args(annotation):
        out += item_models(arg)
    return out


def absent_fields(model, body, prefix=""):
    """Fields the models of the listed items declare that the body's first item leaves out."""
    absent = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        value = body.get(key) if isinstance(body, dict) else None
        if isinstance(value, dict) and key == "groups":
            for groups in value.values():
                if groups:
                    for inner in item_models(field.annotation):
                        absent += absent_fields(inner, groups[0], f"{prefix}{key}[].")
                        break
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for inner in item_models(field.annotation):
                absent += [f"{prefix}{key}[]." + (f.alias or n) for n, f in inner.model_fields.items() if (f.alias or n) not in value[0]]
                break
    return absent


def main(paths):
    report = {"paths": {}, "without_model": [], "checked": 0, "invalid": 0}
    for arg in paths:
        with open(arg) as f:
            items = json.load(f)
        for item in items:
            path, body = item["path"], item["body"]
            model = model_for(path)
            if model is None:
                if path not in report["without_model"]:
                    report["without_model"].append(path)
                continue
            report["checked"] += 1
            entry = report["paths"].setdefault(path, {"model": model.__name__, "count": 0, "invalid": 0, "errors": [], "absent": []})
            entry["count"] += 1
            for name in absent_fields(model, body):
                if name not in entry["absent"]:
                    entry["absent"].append(name)
            try:
                model.model_validate(body)
            except pydantic.ValidationError as e:
                entry["invalid"] += 1
                report["invalid"] += 1
                if len(entry["errors"]) < 5:
                    for err in e.errors()[:3]:
                        loc = ".".join(str(x) for x in err["loc"])
                        entry["errors"].append(f"{loc}: {err['msg']} (got {str(err.get('input'))[:80]})")
    print(json.dumps(report, indent=1, sort_keys=True))
    return 1 if report["invalid"] else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"check_reads: {e}", file=sys.stderr)
        sys.exit(2)
