-- Hourly rollup of the realtime-analytics aggregates: minute windows -> hours, distinct users included.
--
-- Reads the final-pane view that `python -m pipelines.release.provision` creates next to the aggregates table
-- (<aggregates>_final: one row per window, event_type and key, the complete result of that window).
-- Replace `my-project.analytics` with your dataset.
--
-- Distinct users cannot be added up across minutes: a user active in two minutes of the hour would count twice.
-- Every row carries distinct_users_sketch, a HyperLogLog++ sketch in BigQuery's own format (ZetaSketch,
-- precision 15, the HLL_COUNT.INIT default); HLL_COUNT.MERGE unions the sketches of an hour and returns that
-- hour's estimated distinct users (standard error about 0.6 % at precision 15; near exact for small counts).
--
-- Meant for fixed windows whose size divides an hour (the default, 60 s). Sliding windows overlap, so the sums
-- would count an event once per window it belongs to (the sketch union is still right); session windows are
-- attributed to the hour in which they start.
--
-- Parameters: @from_ts, @to_ts (TIMESTAMP): the window_start range [from_ts, to_ts). The filter on window_start
-- also limits the scan to the DAY partitions it touches.
--   bq query --use_legacy_sql=false \
--     --parameter=from_ts:TIMESTAMP:2024-01-01T00:00:00Z --parameter=to_ts:TIMESTAMP:2024-01-02T00:00:00Z \
--     "$(cat schemas/rollup_hourly.sql)"
--
-- The local BigQuery emulator has no HLL_COUNT functions. tests/integration/test_bigquery_sink.py runs this very
-- query there with HLL_COUNT.MERGE(...) replaced by ARRAY_AGG(...) and merges the sketches in Python (the
-- ZetaSketch format is checked against Google's Java implementation), so everything else here is tested.
SELECT
  TIMESTAMP_TRUNC(window_start, HOUR) AS hour_start,
  event_type,
  key,
  SUM(event_count) AS event_count,
  SUM(value_sum) AS value_sum,
  HLL_COUNT.MERGE(distinct_users_sketch) AS distinct_users,
  COUNT(*) AS windows
FROM `my-project.analytics.aggregates_final`
WHERE window_start >= @from_ts AND window_start < @to_ts
GROUP BY hour_start, event_type, key
ORDER BY hour_start, event_type, key
