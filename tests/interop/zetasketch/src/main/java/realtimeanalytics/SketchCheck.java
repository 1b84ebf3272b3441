package realtimeanalytics;

import com.google.protos.zetasketch.Aggregator.AggregatorStateProto;
import com.google.protos.zetasketch.HllplusUnique;
import com.google.protos.zetasketch.HllplusUnique.HyperLogLogPlusUniqueStateProto;
import com.google.zetasketch.HyperLogLogPlusPlus;
import com.google.zetasketch.shaded.com.google.protobuf.ExtensionRegistry;
import java.io.BufferedReader;
import java.io.BufferedWriter;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStreamWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;

/**
 * Line-oriented request/response loop around Google's Java ZetaSketch, so one JVM serves a whole test run.
 *
 * <p>Each request is one line of tab-separated fields (every free-form field is base64, so none contains a
 * tab or newline; an empty field is kept, so an empty string or empty byte string still counts as a value).
 * Each response is one line: {@code ok[<TAB>field...]} or {@code error<TAB>message}. A failing request does
 * not stop the loop, so a test sees Java's own exception.
 *
 * <pre>
 * ping                          -> ok  pong
 * estimate B64 [B64...]         -> ok  EST [EST...]          forProto(bytes).result() per sketch
 * merge B64 [B64...]            -> ok  EST  B64              forProto(first).merge(rest...), serializeToByteArray()
 * build P SP [B64VALUE...]      -> ok  EST  B64              Builder().normalPrecision(P).sparsePrecision(SP)
 *                                                           .buildForStrings(); SP=0 means noSparseMode();
 *                                                           each value is the base64 of its UTF-8 bytes
 * build_file P SP PATH_B64      -> ok  EST  B64              same, values are the UTF-8 lines of a file
 * reserialize B64               -> ok  B64                   forProto(bytes).serializeToByteArray()
 * info B64                      -> ok  key=value...          the proto fields, parsed by Java's own proto classes
 * </pre>
 */
public final class SketchCheck {
  private static final Base64.Decoder B64_DECODER = Base64.getDecoder();
  private static final Base64.Encoder B64_ENCODER = Base64.getEncoder();

  private SketchCheck() {}

  public static void main(String[] args) throws IOException {
    BufferedReader in =
        new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8), 1 << 16);
    BufferedWriter out =
        new BufferedWriter(new OutputStreamWriter(System.out, StandardCharsets.UTF_8), 1 << 16);
    String line;
    while ((line = in.readLine()) != null) {
      String response;
      try {
        List<String> fields = handle(line.split("\t", -1));
        response = fields.isEmpty() ? "ok" : "ok\t" + String.join("\t", fields);
      } catch (Exception | AssertionError e) {
        // Reported to the caller rather than fatal: "Java rejects this sketch" is a test result.
        String message = e.getClass().getName() + ": " + e.getMessage();
        response = "error\t" + message.replaceAll("[\\r\\n\\t]+", " ");
      }
      out.write(response);
      out.write('\n');
      out.flush();
    }
  }

  private static List<String> handle(String[] fields) throws Exception {
    String op = fields[0];
    List<String> result = new ArrayList<>();
    switch (op) {
      case "ping":
        result.add("pong");
        return result;
      case "estimate":
        for (int i = 1; i < fields.length; i++) {
          result.add(Long.toString(HyperLogLogPlusPlus.forProto(decode(fields[i])).result()));
        }
        return result;
      case "merge":
        {
          requireArgs(fields, 2, "merge B64 [B64...]");
          HyperLogLogPlusPlus<?> merged = HyperLogLogPlusPlus.forProto(decode(fields[1]));
          for (int i = 2; i < fields.length; i++) {
            merged.merge(decode(fields[i]));
          }
          return describe(merged);
        }
      case "build":
        {
          requireArgs(fields, 3, "build P SP [B64VALUE...]");
          HyperLogLogPlusPlus<String> sketch = newStringSketch(fields[1], fields[2]);
          for (int i = 3; i < fields.length; i++) {
            sketch.add(new String(decode(fields[i]), StandardCharsets.UTF_8));
          }
          return describe(sketch);
        }
      case "build_file":
        {
          requireArgs(fields, 4, "build_file P SP PATH_B64");
          HyperLogLogPlusPlus<String> sketch = newStringSketch(fields[1], fields[2]);
          String path = new String(decode(fields[3]), StandardCharsets.UTF_8);
          for (String value : Files.readAllLines(Paths.get(path), StandardCharsets.UTF_8)) {
            sketch.add(value);
          }
          return describe(sketch);
        }
      case "reserialize":
        requireArgs(fields, 2, "reserialize B64");
        result.add(encode(HyperLogLogPlusPlus.forProto(decode(fields[1])).serializeToByteArray()));
        return result;
      case "info":
        requireArgs(fields, 2, "info B64");
        return info(decode(fields[1]));
      default:
        throw new IllegalArgumentException("unknown op '" + op + "'");
    }
  }

  private static HyperLogLogPlusPlus<String> newStringSketch(String precision, String sparsePrecision) {
    HyperLogLogPlusPlus.Builder builder =
        new HyperLogLogPlusPlus.Builder().normalPrecision(Integer.parseInt(precision));
    int sp = Integer.parseInt(sparsePrecision);
    builder = sp == 0 ? builder.noSparseMode() : builder.sparsePrecision(sp);
    return builder.buildForStrings();
  }

  private static List<String> describe(HyperLogLogPlusPlus<?> sketch) {
    // Serialize before result(): the estimate must describe exactly the bytes handed back.
    byte[] bytes = sketch.serializeToByteArray();
    List<String> result = new ArrayList<>();
    result.add(Long.toString(sketch.result()));
    result.add(encode(bytes));
    return result;
  }

  private static List<String> info(byte[] bytes) throws Exception {
    ExtensionRegistry registry = ExtensionRegistry.newInstance();
    HllplusUnique.registerAllExtensions(registry);
    AggregatorStateProto proto = AggregatorStateProto.parseFrom(bytes, registry);
    HyperLogLogPlusUniqueStateProto hll = proto.getExtension(HllplusUnique.hyperloglogplusUniqueState);
    List<String> result = new ArrayList<>();
    result.add("type=" + proto.getType());
    result.add("num_values=" + proto.getNumValues());
    result.add("encoding_version=" + proto.getEncodingVersion());
    result.add("value_type=" + proto.getValueType());
    result.add("precision=" + hll.getPrecisionOrNumBuckets());
    result.add("sparse_precision=" + hll.getSparsePrecisionOrNumBuckets());
    result.add("sparse_size=" + hll.getSparseSize());
    result.add("has_data=" + hll.hasData());
    result.add("data_len=" + hll.getData().size());
    result.add("has_sparse_data=" + hll.hasSparseData());
    result.add("sparse_data_len=" + hll.getSparseData().size());
    result.add("unknown_fields=" + (proto.getUnknownFields().asMap().size()
        + hll.getUnknownFields().asMap().size()));
    return result;
  }

  private static void requireArgs(String[] fields, int min, String usage) {
    if (fields.length < min) {
      throw new IllegalArgumentException("usage: " + usage);
    }
  }

  private static byte[] decode(String b64) {
    return B64_DECODER.decode(b64);
  }

  private static String encode(byte[] bytes) {
    return B64_ENCODER.encodeToString(bytes);
  }
}
