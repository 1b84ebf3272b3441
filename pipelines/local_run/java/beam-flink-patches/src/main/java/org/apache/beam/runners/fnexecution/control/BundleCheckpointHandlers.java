/*
 * Licensed to the Apache Software Foundation (ASF) under one
 * or more contributor license agreements.  See the NOTICE file
 * distributed with this work for additional information
 * regarding copyright ownership.  The ASF licenses this file
 * to you under the Apache License, Version 2.0 (the
 * "License"); you may not use this file except in compliance
 * with the License.  You may obtain a copy of the License at
 *
 *     http://www.apache.org/licenses/LICENSE-2.0
 *
 * Unless required by applicable law or agreed to in writing, software
 * distributed under the License is distributed on an "AS IS" BASIS,
 * WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
 * See the License for the specific language governing permissions and
 * limitations under the License.
 */
package org.apache.beam.runners.fnexecution.control;

// PATCHED copy of Beam Java 2.62.0's BundleCheckpointHandlers (beam-runners-java-fn-execution), compiled into this
// project's Flink job server jar by pipelines/local_run/jars.py (FLINK_JAVA), where it takes the place of the original class.
// It goes with the patched ExecutableStageDoFnOperator and FlinkExecutableStageFunction next to it, which read the
// residuals back through takeResidual. Upstream: apache/beam#27648. Two changes, marked "PATCH":
//  1. Every residual of a self-checkpointing splittable DoFn is kept in ONE map state per key and window (entry =
//     the residual's timer id), and the entry is removed when its timer fires. 2.62 wrote each residual under a
//     fresh value-state tag ("sdf_checkpoint:<n>:<index>") and never cleared it; Flink registers a keyed state
//     (a state table per name, ~70 KB on the heap backend) for every distinct name and never drops it, so a Python
//     unbounded source (PeriodicImpulse: the project's synthetic:// stream) grew the TaskManager heap until
//     OutOfMemoryError. Timer ids stay unique per residual, so residual chains of one element (an UnboundedSource
//     split into several restrictions of the same element share the key) never overwrite each other; Flink's timer
//     service drops a timer's id when it fires. The ids carry a random prefix per handler, so ids drawn after a
//     restore never meet restored ones (2.62's counter restarted at 1).
//  2. The requested resume delay keeps its sub-second part. 2.62 used only its whole seconds, so an SDF deferring
//     for less than a second (PeriodicImpulse between ticks) was resumed at once, again and again: a busy loop of
//     bundles, each a self-checkpoint.

import java.util.UUID;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.DelayedBundleApplication;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.ProcessBundleResponse;
import org.apache.beam.runners.core.StateInternals;
import org.apache.beam.runners.core.StateInternalsFactory;
import org.apache.beam.runners.core.StateNamespace;
import org.apache.beam.runners.core.StateNamespaces;
import org.apache.beam.runners.core.StateTag;
import org.apache.beam.runners.core.StateTags;
import org.apache.beam.runners.core.TimerInternals;
import org.apache.beam.runners.core.TimerInternalsFactory;
import org.apache.beam.sdk.coders.Coder;
import org.apache.beam.sdk.coders.StringUtf8Coder;
import org.apache.beam.sdk.fn.IdGenerator;
import org.apache.beam.sdk.fn.IdGenerators;
import org.apache.beam.sdk.state.MapState;
import org.apache.beam.sdk.state.TimeDomain;
import org.apache.beam.sdk.transforms.windowing.BoundedWindow;
import org.apache.beam.sdk.util.CoderUtils;
import org.apache.beam.sdk.util.WindowedValue;
import org.apache.beam.vendor.guava.v32_1_2_jre.com.google.common.collect.ImmutableList;
import org.joda.time.Duration;
import org.joda.time.Instant;

/** Utility methods for creating {@link BundleCheckpointHandler}s. */
@SuppressWarnings({
  "rawtypes", // TODO(https://github.com/apache/beam/issues/20447)
  "nullness" // TODO(https://github.com/apache/beam/issues/20497)
})
public class BundleCheckpointHandlers {

  /**
   * A {@link BundleCheckpointHandler} which uses {@link
   * org.apache.beam.runners.core.TimerInternals.TimerData} and {@link MapState} to reschedule
   * {@link DelayedBundleApplication}.
   */
  public static class StateAndTimerBundleCheckpointHandler<T> implements BundleCheckpointHandler {

    private final TimerInternalsFactory<T> timerInternalsFactory;
    private final StateInternalsFactory<T> stateInternalsFactory;
    private final Coder<WindowedValue<T>> residualCoder;
    private final Coder windowCoder;
    private final IdGenerator idGenerator = IdGenerators.incrementingLongs();
    // PATCH 1: unique across restores of the same job (2.62's counter alone restarted at 1).
    private final String idPrefix = UUID.randomUUID().toString();
    public static final String SDF_PREFIX = "sdf_checkpoint";
    // PATCH 1: the one state that holds a key and window's pending residuals, by timer id.
    public static final String RESIDUALS_STATE_ID = SDF_PREFIX + "_residuals";

    public StateAndTimerBundleCheckpointHandler(
        TimerInternalsFactory<T> timerInternalsFactory,
        StateInternalsFactory<T> stateInternalsFactory,
        Coder<WindowedValue<T>> residualCoder,
        Coder windowCoder) {
      this.residualCoder = residualCoder;
      this.windowCoder = windowCoder;
      this.timerInternalsFactory = timerInternalsFactory;
      this.stateInternalsFactory = stateInternalsFactory;
    }

    /**
     * A helper function to help check whether the given timer is the timer which is set for
     * rescheduling {@link DelayedBundleApplication}.
     */
    public static boolean isSdfTimer(String timerId) {
      return timerId.startsWith(SDF_PREFIX);
    }

    // PATCH 1: the state tag of the residual map (one name, whatever the number of checkpoints).
    private static <T> StateTag<MapState<String, WindowedValue<T>>> residualsTag(
        Coder<WindowedValue<T>> residualCoder) {
      return StateTags.map(RESIDUALS_STATE_ID, StringUtf8Coder.of(), residualCoder);
    }

    /**
     * PATCH 1: the residual whose timer {@code timerId} fired, removed from the state it was kept
     * in (the state internals must be set to the timer's key).
     */
    public static <T> WindowedValue<T> takeResidual(
        StateInternals stateInternals,
        StateNamespace namespace,
        String timerId,
        Coder<WindowedValue<T>> residualCoder) {
      MapState<String, WindowedValue<T>> residuals =
          stateInternals.state(namespace, residualsTag(residualCoder));
      WindowedValue<T> residual = residuals.get(timerId).read();
      if (residual == null) {
        throw new IllegalStateException("No residual kept for the SDF timer " + timerId);
      }
      residuals.remove(timerId);
      return residual;
    }

    private String constructSdfCheckpointId(String id, int index) {
      return SDF_PREFIX + ":" + idPrefix + "-" + id + ":" + index;
    }

    @Override
    public void onCheckpoint(ProcessBundleResponse response) {
      String id = idGenerator.getId();
      for (int index = 0; index < response.getResidualRootsCount(); index++) {
        DelayedBundleApplication residual = response.getResidualRoots(index);
        if (!residual.hasApplication()) {
          continue;
        }
        String tag = constructSdfCheckpointId(id, index);
        try {
          WindowedValue<T> stateValue =
              CoderUtils.decodeFromByteArray(
                  residualCoder, residual.getApplication().getElement().toByteArray());
          TimerInternals timerInternals =
              timerInternalsFactory.timerInternalsForKey(stateValue.getValue());
          StateInternals stateInternals =
              stateInternalsFactory.stateInternalsForKey(stateValue.getValue());
          // Calculate the timestamp for the timer.
          Instant timestamp = Instant.now();
          if (residual.hasRequestedTimeDelay()) {
            // PATCH 2: was getSeconds() * 1000 only.
            timestamp =
                timestamp.plus(
                    Duration.millis(
                        residual.getRequestedTimeDelay().getSeconds() * 1000
                            + residual.getRequestedTimeDelay().getNanos() / 1_000_000));
          }
          // Calculate the watermark hold for the timer.
          long outputTimestamp = BoundedWindow.TIMESTAMP_MAX_VALUE.getMillis();
          if (!residual.getApplication().getOutputWatermarksMap().isEmpty()) {
            for (org.apache.beam.vendor.grpc.v1p60p1.com.google.protobuf.Timestamp outputWatermark :
                residual.getApplication().getOutputWatermarksMap().values()) {
              outputTimestamp = Math.min(outputTimestamp, outputWatermark.getSeconds() * 1000);
            }
          } else {
            outputTimestamp = BoundedWindow.TIMESTAMP_MIN_VALUE.getMillis();
          }
          for (BoundedWindow window : stateValue.getWindows()) {
            StateNamespace stateNamespace = StateNamespaces.window(windowCoder, window);
            timerInternals.setTimer(
                stateNamespace,
                tag,
                "",
                timestamp,
                Instant.ofEpochMilli(outputTimestamp),
                TimeDomain.PROCESSING_TIME);
            // PATCH 1: was .state(stateNamespace, StateTags.value(tag, residualCoder)).write(...).
            stateInternals
                .state(stateNamespace, residualsTag(residualCoder))
                .put(
                    tag,
                    WindowedValue.of(
                        stateValue.getValue(),
                        stateValue.getTimestamp(),
                        ImmutableList.of(window),
                        stateValue.getPane()));
          }
        } catch (Exception e) {
          throw new RuntimeException("Failed to set timer/state for the residual", e);
        }
      }
    }
  }
}
