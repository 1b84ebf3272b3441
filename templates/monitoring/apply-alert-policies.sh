#!/usr/bin/env bash
# Creates or updates the Cloud Monitoring alert policies of templates/monitoring/alert-policies/ for one Dataflow job
# (the same alerts and thresholds as monitoring/prometheus/alerts.yml; docs/operations.md).
#
# Required: PROJECT, JOB_NAME (the Dataflow job name, as in templates/deploy.sh).
# Optional: NOTIFICATION_CHANNELS (comma-separated projects/<p>/notificationChannels/<id>), DRY_RUN=1 (print each
# policy as it would be sent and call nothing).
# Idempotent: a policy whose display name exists already is updated in place, otherwise created.
set -euo pipefail

: "${PROJECT:?}" "${JOB_NAME:?}"
CHANNELS=${NOTIFICATION_CHANNELS:-}
DRY_RUN=${DRY_RUN:-0}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# Dataflow job names are [a-z]([-a-z0-9]*[a-z0-9])?: safe inside the PromQL string literals of the policies.
if [[ ! $JOB_NAME =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]]; then
  echo "error: JOB_NAME='$JOB_NAME' is not a Dataflow job name ([a-z]([-a-z0-9]*[a-z0-9])?)" >&2
  exit 2
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

render() {  # policy file -> the policy with the job name and notification channels filled in, on stdout
  python3 - "$1" "$JOB_NAME" "$CHANNELS" <<'PY'
import json, sys
path, job, channels = sys.argv[1:]
policy = json.loads(open(path).read().replace("${JOB_NAME}", job))
if channels:
    policy["notificationChannels"] = channels.split(",")
print(json.dumps(policy, indent=2))
PY
}

for source in "$here"/alert-policies/*.json; do
  policy="$tmp/$(basename "$source")"
  render "$source" > "$policy"
  name=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["displayName"])' "$policy")
  if [[ $DRY_RUN == 1 ]]; then
    cat "$policy"
    continue
  fi
  existing=$(gcloud alpha monitoring policies list --project="$PROJECT" \
    --filter="displayName=\"$name\"" --format="value(name)" | head -n 1)
  if [[ -n $existing ]]; then
    echo "updating $name ($existing)"
    gcloud alpha monitoring policies update "$existing" --project="$PROJECT" --policy-from-file="$policy"
  else
    echo "creating $name"
    gcloud alpha monitoring policies create --project="$PROJECT" --policy-from-file="$policy"
  fi
done
