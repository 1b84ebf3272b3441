#!/usr/bin/env bash
# Deploys the streaming job from a flex template spec (docs/ci-deploy.md):
#   - no active job named $JOB_NAME  -> start one;
#   - an active job                  -> update it in place (--update; with the renames of
#                                       $MAPPING_FILE, default templates/transform_name_mapping.json, if present);
#   - update rejected as incompatible -> drain the old job, wait until it has drained, start a new one
#                                       ($ON_INCOMPATIBLE=replace, the default; =fail stops instead).
# Any other failure stops the deploy and leaves the running job alone.
#
# Required: PROJECT REGION JOB_NAME TEMPLATE (gs://.../spec.json) IMAGE BUCKET SOURCE
# Optional: SINK DEAD_LETTER_SINK EXTRA_PARAMETERS (name=value pairs separated by '~') SERVICE_ACCOUNT
#           MAX_WORKERS MACHINE_TYPE NETWORK SUBNETWORK KMS_KEY MAPPING_FILE ON_INCOMPATIBLE
#           POLL_SECONDS (15) WAIT_SECONDS (1800)
set -euo pipefail

: "${PROJECT:?}" "${REGION:?}" "${JOB_NAME:?}" "${TEMPLATE:?}" "${IMAGE:?}" "${BUCKET:?}" "${SOURCE:?}"
MAPPING_FILE=${MAPPING_FILE:-templates/transform_name_mapping.json}
ON_INCOMPATIBLE=${ON_INCOMPATIBLE:-replace}
POLL_SECONDS=${POLL_SECONDS:-15}
WAIT_SECONDS=${WAIT_SECONDS:-1800}

log() { printf 'deploy: %s\n' "$*" >&2; }

# gcloud's --parameters with '~' as the separator (values may hold commas: Kafka server lists, synthetic URIs).
parameters="^~^source=${SOURCE}~sdk_container_image=${IMAGE}~autoscaling_algorithm=THROUGHPUT_BASED"
[[ -n "${SINK:-}" ]] && parameters+="~sink=${SINK}"
[[ -n "${DEAD_LETTER_SINK:-}" ]] && parameters+="~dead_letter_sink=${DEAD_LETTER_SINK}"
[[ -n "${EXTRA_PARAMETERS:-}" ]] && parameters+="~${EXTRA_PARAMETERS}"

run_args=(
  --project="$PROJECT"
  --region="$REGION"
  --template-file-gcs-location="$TEMPLATE"
  --parameters="$parameters"
  --staging-location="gs://${BUCKET}/staging"
  --temp-location="gs://${BUCKET}/tmp"
  --enable-streaming-engine
  --max-workers="${MAX_WORKERS:-10}"
  --worker-machine-type="${MACHINE_TYPE:-n2-standard-2}"
  --format="value(job.id)"
)
[[ -n "${SERVICE_ACCOUNT:-}" ]] && run_args+=(--service-account-email="$SERVICE_ACCOUNT")
[[ -n "${NETWORK:-}" ]] && run_args+=(--network="$NETWORK")
[[ -n "${SUBNETWORK:-}" ]] && run_args+=(--subnetwork="$SUBNETWORK")
[[ -n "${KMS_KEY:-}" ]] && run_args+=(--dataflow-kms-key="$KMS_KEY")

active_job() {  # "ID STATE" of the active job named exactly $JOB_NAME, or nothing
  gcloud dataflow jobs list --project="$PROJECT" --region="$REGION" --status=active \
    --format="value(name,id,state)" | awk -v name="$JOB_NAME" '$1 == name { print $2, $3 }'
}

job_state() {
  gcloud dataflow jobs describe "$1" --project="$PROJECT" --region="$REGION" --format="value(currentState)"
}

wait_for() {  # JOB_ID STATE... : wait until the job reaches one of the states (or a terminal one)
  local job=$1 deadline=$((SECONDS + WAIT_SECONDS)) state
  shift
  while :; do
    state=$(job_state "$job")
    for wanted in "$@" JOB_STATE_DONE JOB_STATE_FAILED JOB_STATE_CANCELLED JOB_STATE_DRAINED JOB_STATE_UPDATED; do
      if [[ "$state" == "$wanted" ]]; then
        printf '%s\n' "$state"
        return 0
      fi
    done
    if ((SECONDS >= deadline)); then
      log "job $job still $state after ${WAIT_SECONDS}s"
      printf '%s\n' "$state"
      return 1
    fi
    sleep "$POLL_SECONDS"
  done
}

start_job() {
  local job
  job=$(gcloud dataflow flex-template run "$JOB_NAME" "${run_args[@]}")
  log "started job $job"
  [[ "$(wait_for "$job" JOB_STATE_RUNNING)" == JOB_STATE_RUNNING ]] || { log "job $job did not start"; exit 1; }
}

update_args=(--update)
if [[ -f "$MAPPING_FILE" ]]; then
  # {"Old/Label": "New/Label", ...} -> Old/Label=New/Label;... (gcloud's ';' separator form).
  mappings=$(python3 -c 'import json, sys; m = json.load(open(sys.argv[1])); print("^;^" + ";".join(f"{k}={v}" for k, v in m.items()))' "$MAPPING_FILE")
  update_args+=(--transform-name-mappings="$mappings")
  log "renames from $MAPPING_FILE: $mappings"
fi

listing=$(active_job)
read -r old_job old_state <<<"$listing" || true
if [[ -z "${old_job:-}" ]]; then
  log "no active job named $JOB_NAME: starting one"
  start_job
  exit 0
fi
if [[ "$old_state" != JOB_STATE_RUNNING ]]; then
  log "job $old_job is $old_state: waiting for it to finish before starting a new one"
  wait_for "$old_job" >/dev/null || exit 1
  start_job
  exit 0
fi

log "updating running job $old_job in place"
new_job=$(gcloud dataflow flex-template run "$JOB_NAME" "${run_args[@]}" "${update_args[@]}")
state=$(wait_for "$new_job" JOB_STATE_RUNNING) || { log "update job $new_job: no verdict in time"; exit 1; }
if [[ "$state" == JOB_STATE_RUNNING ]]; then
  log "updated: $old_job -> $new_job"
  exit 0
fi

errors=$(gcloud dataflow logs list "$new_job" --project="$PROJECT" --region="$REGION" --importance=error \
  --format="value(messageText)" || true)
if ! grep -qi "compatib" <<<"$errors"; then
  log "update job $new_job ended $state for another reason; job $old_job left running:"
  printf '%s\n' "$errors" >&2
  exit 1
fi
log "Dataflow rejected the update as incompatible:"
printf '%s\n' "$errors" >&2
if [[ "$ON_INCOMPATIBLE" != replace ]]; then
  log "ON_INCOMPATIBLE=$ON_INCOMPATIBLE: job $old_job left running"
  exit 1
fi
log "draining $old_job (in-flight windows fire; the subscription keeps unacknowledged messages), then starting anew"
gcloud dataflow jobs drain "$old_job" --project="$PROJECT" --region="$REGION"
[[ "$(wait_for "$old_job" JOB_STATE_DRAINED)" == JOB_STATE_DRAINED ]] || { log "job $old_job did not drain"; exit 1; }
start_job
