#!/usr/bin/env bash
# Scheduled deploys (docs/ci-deploy.md): a manual Cloud Build trigger that runs cloudbuild.yaml (test, image,
# template, deploy), and a Cloud Scheduler job that runs that trigger on a cron schedule. Idempotent: existing
# ones are updated.
#
# Required: PROJECT REGION BUCKET SOURCE BUILD_SA (the build's service account e-mail) SCHEDULER_SA (the
#           service account Cloud Scheduler calls as; needs roles/cloudbuild.builds.editor on the project) and
#           either REPO (1st gen, https://github.com/OWNER/NAME) or REPOSITORY (2nd gen,
#           projects/P/locations/L/connections/C/repositories/R)
# Optional: TRIGGER (realtime-analytics-deploy) BRANCH (main) SCHEDULE ("0 6 * * 1") TIME_ZONE (Etc/UTC)
#           SCHEDULER_JOB (realtime-analytics-deploy) SUBSTITUTIONS (more _KEY=VALUE pairs, '~'-separated)
set -euo pipefail

: "${PROJECT:?}" "${REGION:?}" "${BUCKET:?}" "${SOURCE:?}" "${BUILD_SA:?}" "${SCHEDULER_SA:?}"
TRIGGER=${TRIGGER:-realtime-analytics-deploy}
BRANCH=${BRANCH:-main}
SCHEDULE=${SCHEDULE:-0 6 * * 1}
TIME_ZONE=${TIME_ZONE:-Etc/UTC}
SCHEDULER_JOB=${SCHEDULER_JOB:-realtime-analytics-deploy}

# '~' separates the pairs: a source URI may hold commas.
substitutions="^~^_REGION=${REGION}~_BUCKET=${BUCKET}~_SOURCE=${SOURCE}"
[[ -n "${SUBSTITUTIONS:-}" ]] && substitutions+="~${SUBSTITUTIONS}"

if [[ -n "${REPOSITORY:-}" ]]; then
  source_args=(--repository="$REPOSITORY")
else
  : "${REPO:?set REPO (1st gen) or REPOSITORY (2nd gen)}"
  source_args=(--repo="$REPO" --repo-type=GITHUB)
fi

if gcloud builds triggers describe "$TRIGGER" --project="$PROJECT" --region="$REGION" >/dev/null 2>&1; then
  echo "trigger $TRIGGER exists: updating its substitutions"
  gcloud builds triggers update manual "$TRIGGER" --project="$PROJECT" --region="$REGION" \
    --update-substitutions="$substitutions"
else
  gcloud builds triggers create manual \
    --project="$PROJECT" \
    --region="$REGION" \
    --name="$TRIGGER" \
    --description="realtime-analytics: test, build the flex template, deploy (templates/deploy.sh)" \
    --build-config=cloudbuild.yaml \
    "${source_args[@]}" \
    --branch="$BRANCH" \
    --service-account="projects/${PROJECT}/serviceAccounts/${BUILD_SA}" \
    --substitutions="$substitutions"
fi
trigger_id=$(gcloud builds triggers describe "$TRIGGER" --project="$PROJECT" --region="$REGION" --format="value(id)")

# Cloud Build REST: projects.locations.triggers.run; an empty body builds the trigger's own branch.
uri="https://cloudbuild.googleapis.com/v1/projects/${PROJECT}/locations/${REGION}/triggers/${trigger_id}:run"
scheduler_args=(
  --project="$PROJECT"
  --location="$REGION"
  --schedule="$SCHEDULE"
  --time-zone="$TIME_ZONE"
  --uri="$uri"
  --http-method=POST
  --message-body="{}"
  --oauth-service-account-email="$SCHEDULER_SA"
  --oauth-token-scope=https://www.googleapis.com/auth/cloud-platform
)
if gcloud scheduler jobs describe "$SCHEDULER_JOB" --project="$PROJECT" --location="$REGION" >/dev/null 2>&1; then
  gcloud scheduler jobs update http "$SCHEDULER_JOB" "${scheduler_args[@]}"
else
  gcloud scheduler jobs create http "$SCHEDULER_JOB" "${scheduler_args[@]}" \
    --description="Runs Cloud Build trigger $TRIGGER (scheduled deploy of realtime-analytics)"
fi
echo "scheduled: $SCHEDULER_JOB ($SCHEDULE $TIME_ZONE) -> trigger $TRIGGER ($trigger_id)"
