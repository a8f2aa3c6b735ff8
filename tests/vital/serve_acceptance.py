"""Vital's own Python SDK (`vital` on PyPI) pointed at `withings-lake serve`: the acceptance
client of the service's REST API. A browser is played by curl with a cookie jar (the jar
also says which simulated person is logged in at Withings: the `sim_user` cookie).

argv: service base URL, API key, simulator base URL, redirect URL, output file (JSON).
Prints nothing on success; the Rust test reads the output file and checks the rest.
"""

import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
import urllib.parse

from vital import Vital
from vital.core.api_error import ApiError

base, api_key, sim_base, redirect, out_file = sys.argv[1:6]
client = Vital(api_key=api_key, base_url=base)
out = {"users": {}}


def browser(url: str, sim_user: int) -> str:
    """Follows a link_web_url like a browser logged into Withings as `sim_user`; returns
    where the link ends (the app's redirect_url with its query)."""
    host = urllib.parse.urlparse(sim_base).hostname
    with tempfile.NamedTemporaryFile("w", suffix=".jar", delete=False) as jar:
        jar.write(f"{host}\tFALSE\t/\tFALSE\t0\tsim_user\t{sim_user}\n")
    done = subprocess.run(
        ["curl", "-s", "-L", "--max-redirs", "5", "-b", jar.name, "-c", jar.name, "-o", "/dev/null", "-w", "%{url_effective}", url],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


for index, name in enumerate(["ann", "ben"]):
    user = client.user.create(client_user_id=name)
    try:
        client.user.create(client_user_id=name)
        raise SystemExit("creating the same client_user_id twice must fail")
    except ApiError as e:
        assert e.status_code == 409, e.status_code
    token = client.link.token(user_id=user.user_id, provider="withings", redirect_url=redirect)
    end = browser(token.link_web_url, index)
    assert "state=success" in end, end
    out["users"][name] = user.user_id

# The backfills run by themselves; the reads wait for them (the service answers 200 with
# what it has).
start = (dt.datetime.fromisoformat(sys.argv[6]) - dt.timedelta(days=13)).date().isoformat() if len(sys.argv) > 6 else None
end_date = dt.datetime.fromisoformat(sys.argv[6]).date().isoformat() if len(sys.argv) > 6 else None
deadline = time.time() + 120
ann = out["users"]["ann"]
while time.time() < deadline:
    if client.sleep.get(ann, start_date=start, end_date=end_date).sleep and client.body.get(out["users"]["ben"], start_date=start, end_date=end_date).body:
        break
    time.sleep(1)

for name, user_id in out["users"].items():
    got = {}
    assert client.user.get(user_id).client_user_id == name
    assert client.user.get_by_client_user_id(name).user_id == user_id
    providers = client.user.get_connected_providers(user_id)
    got["providers"] = [p.slug for p in providers["providers"]]
    got["sleep"] = len(client.sleep.get(user_id, start_date=start, end_date=end_date).sleep)
    got["activity"] = len(client.activity.get(user_id, start_date=start, end_date=end_date).activity)
    got["body"] = len(client.body.get(user_id, start_date=start, end_date=end_date).body)
    got["workouts"] = len(client.workouts.get(user_id, start_date=start, end_date=end_date).workouts)
    samples, cursor, pages = 0, None, 0
    while True:
        page = client.vitals.heartrate_grouped(user_id, start_date=start, end_date=end_date, next_cursor=cursor)
        samples += sum(len(g.data) for g in page.groups.get("withings", []))
        pages += 1
        cursor = page.next_cursor
        if not cursor:
            break
    got["heartrate"] = samples
    got["heartrate_pages"] = pages
    refreshed = client.user.refresh(user_id)
    assert refreshed.success, refreshed
    got["refreshed"] = len(refreshed.refreshed_sources) + len(refreshed.in_progress_sources)
    out[name] = got

assert client.user.delete(out["users"]["ben"]).success
try:
    client.user.get(out["users"]["ben"])
    raise SystemExit("a deleted user must be gone")
except ApiError as e:
    assert e.status_code == 404, e.status_code

with open(out_file, "w") as f:
    json.dump(out, f)
