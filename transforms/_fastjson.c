/*
 * The JSON fast path in C: one call scans a whole batch of payloads and accepts the plainly valid events.
 *
 * Same contract as the msgspec path in transforms/fast_json.py: it only ever *accepts*. A record is returned as
 * valid with exactly the fields the reference (parse.decode_json + validate.EventValidator) gives it, or its
 * position goes back to the caller for the reference. So the scanner reads only the plain shape and refers
 * everything else:
 *
 *   - a flat JSON object (RFC 8259 grammar, whitespace between tokens) whose names are plain strings; a name
 *     given twice (the reference keeps the last one) is referred;
 *   - strings: printable ASCII (and DEL) only; any escape, control character or non-ASCII byte is referred;
 *   - event_id, event_type, user_id: strings within their lengths (ASCII: characters = bytes), event_type
 *     matching [a-z][a-z0-9_]{0,63};
 *   - event_time: YYYY-MM-DD(T|t)HH:MM:SS[.fraction](Z|z|+HH:MM|-HH:MM) with the reference's calendar checks,
 *     or integer epoch milliseconds (an integer of at most 18 digits, or an integral finite float), within
 *     [min_us, latest_us];
 *   - page: a string within its length, or null; value: an integer of at most 18 digits or a finite float
 *     (read by PyOS_string_to_double from the exact token, so it is the double Python and orjson read);
 *   - properties: an object of string -> string, no name twice;
 *   - other names (forward-compatible extras): any value of plain strings, numbers, literals, arrays and
 *     objects nested at most MAX_EXTRA_DEPTH deep; they are checked for syntax and otherwise ignored.
 *
 * Every read is bounded by the end of the payload; the payload's bytes are never written.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* The event-type pattern this file implements by hand; fast_json.py uses the scanner only while
   validate.EVENT_TYPE_PATTERN is exactly this. */
#define EVENT_TYPE_PATTERN "[a-z][a-z0-9_]{0,63}"
#define EVENT_TYPE_MAX 64
/* 18 decimal digits always fit an int64 (and a double's range): longer integers go to the reference. */
#define MAX_INT_DIGITS 18
/* Float tokens are copied to a NUL-terminated buffer for PyOS_string_to_double; longer ones are referred. */
#define MAX_FLOAT_TOKEN 64
#define MAX_EXTRA_DEPTH 32

enum { F_EVENT_ID, F_EVENT_TYPE, F_USER_ID, F_EVENT_TIME, F_PAGE, F_VALUE, F_PROPERTIES };
#define REQUIRED ((1u << F_EVENT_ID) | (1u << F_EVENT_TYPE) | (1u << F_USER_ID) | (1u << F_EVENT_TIME))

/* --key_field: which field's value is the event's key. */
enum { KEY_PAGE, KEY_EVENT_ID, KEY_EVENT_TYPE, KEY_USER_ID, KEY_PROPERTY };

typedef const unsigned char *ptr;

typedef struct {
    int64_t min_us, latest_us;
    Py_ssize_t event_id_max, user_id_max, page_max;
} limits;

typedef struct {
    unsigned seen; /* bit per contract field: present (and not repeated) */
    ptr text[3];   /* event_id, event_type, user_id */
    Py_ssize_t text_len[3];
    ptr page; /* NULL when null or absent */
    Py_ssize_t page_len;
    int64_t us;
    int value_is_int;
    int64_t value_int;
    double value_float;
    ptr properties; /* at its '{', NULL when absent */
} record;

typedef struct {
    ptr start;
    Py_ssize_t len;
    int is_int;
} number;

/* 1 for the bytes a plain string holds: printable ASCII and DEL, but not '"' or '\\'. */
static unsigned char PLAIN[256];

#define IS_DIGIT(c) ((unsigned)((c) - '0') < 10u)

/* The first byte from p that PLAIN refuses (or end). Eight bytes at a time: in the word test (a quote, a
   backslash, a byte below 0x20, a byte from 0x80) a flag can be wrong only in a byte after a rightly flagged one,
   so on a little-endian machine the lowest flag is the first special byte. The last few bytes one by one. */
static inline ptr
skip_plain(ptr p, ptr end)
{
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    while (end - p >= 8) {
        uint64_t word, quote, backslash, special;
        memcpy(&word, p, 8);
        quote = word ^ (ones * '"');
        backslash = word ^ (ones * '\\');
        special = (((quote - ones) & ~quote) | ((backslash - ones) & ~backslash) | ((word - ones * 0x20) & ~word) |
                   word) &
                  highs;
        if (special) {
            return p + (__builtin_ctzll(special) >> 3);
        }
        p += 8;
    }
#endif
    while (p < end && PLAIN[*p]) {
        p++;
    }
    return p;
}

static inline ptr
skip_ws(ptr p, ptr end)
{
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) {
        p++;
    }
    return p;
}

/* p is at an opening quote (p < end). The position after the closing quote, or NULL to refer. */
static inline ptr
scan_string(ptr p, ptr end, ptr *start, Py_ssize_t *len)
{
    ptr s = ++p;
    p = skip_plain(p, end);
    if (p >= end || *p != '"') {
        return NULL; /* the end of the payload, an escape, a control character or non-ASCII */
    }
    *start = s;
    *len = p - s;
    return p + 1;
}

static inline ptr
match_literal(ptr p, ptr end, const char *literal, Py_ssize_t len)
{
    if (end - p < len || memcmp(p, literal, (size_t)len) != 0) {
        return NULL;
    }
    return p + len;
}

/* RFC 8259 number grammar: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static ptr
scan_number(ptr p, ptr end, number *num)
{
    ptr s = p;
    int is_int = 1;
    if (p < end && *p == '-') {
        p++;
    }
    if (p >= end) {
        return NULL;
    }
    if (*p == '0') {
        p++;
    }
    else if (*p >= '1' && *p <= '9') {
        do {
            p++;
        } while (p < end && IS_DIGIT(*p));
    }
    else {
        return NULL;
    }
    if (p < end && *p == '.') {
        p++;
        if (p >= end || !IS_DIGIT(*p)) {
            return NULL;
        }
        do {
            p++;
        } while (p < end && IS_DIGIT(*p));
        is_int = 0;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-')) {
            p++;
        }
        if (p >= end || !IS_DIGIT(*p)) {
            return NULL;
        }
        do {
            p++;
        } while (p < end && IS_DIGIT(*p));
        is_int = 0;
    }
    num->start = s;
    num->len = p - s;
    num->is_int = is_int;
    return p;
}

/* An integer token of at most MAX_INT_DIGITS digits -> 1 and its value; 0 (refer) if longer. */
static int
number_int64(const number *num, int64_t *out)
{
    ptr p = num->start, end = num->start + num->len;
    int negative = 0;
    int64_t value = 0;
    if (*p == '-') {
        negative = 1;
        p++;
    }
    if (end - p > MAX_INT_DIGITS) {
        return 0;
    }
    for (; p < end; p++) {
        value = value * 10 + (*p - '0');
    }
    *out = negative ? -value : value;
    return 1;
}

#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD == 0
static const double EXACT_POWERS_OF_TEN[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                               1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* Clinger's fast path: when the significant digits fit 53 bits and the power of ten is exact (10^0..10^22), one
   IEEE multiplication or division of exact operands gives the correctly rounded double, which is what float()
   gives. Needs doubles evaluated as doubles (FLT_EVAL_METHOD 0: SSE2, not x87 extended precision). 0 when the
   token is not that simple. */
static int
simple_double(const number *num, double *out)
{
    ptr p = num->start, end = num->start + num->len;
    uint64_t mantissa = 0;
    int digits = 0, exponent = 0, negative = 0;
    if (*p == '-') {
        negative = 1;
        p++;
    }
    for (; p < end && IS_DIGIT(*p); p++) {
        if (mantissa || *p != '0') {
            if (++digits > 19) {
                return 0;
            }
            mantissa = mantissa * 10 + (uint64_t)(*p - '0');
        }
    }
    if (p < end && *p == '.') {
        for (p++; p < end && IS_DIGIT(*p); p++) {
            exponent--;
            if (mantissa || *p != '0') {
                if (++digits > 19) {
                    return 0;
                }
                mantissa = mantissa * 10 + (uint64_t)(*p - '0');
            }
        }
    }
    if (p < end) { /* the exponent part */
        int sign = 1, written = 0;
        p++;
        if (*p == '+' || *p == '-') {
            sign = *p == '-' ? -1 : 1;
            p++;
        }
        for (; p < end; p++) {
            written = written * 10 + (*p - '0');
            if (written > 400) {
                return 0;
            }
        }
        exponent += sign * written;
    }
    if (mantissa > (UINT64_C(1) << 53) || exponent < -22 || exponent > 22) {
        return 0;
    }
    *out = exponent < 0 ? (double)mantissa / EXACT_POWERS_OF_TEN[-exponent]
                        : (double)mantissa * EXACT_POWERS_OF_TEN[exponent];
    if (negative) {
        *out = -*out;
    }
    return 1;
}
#else
static int
simple_double(const number *num, double *out)
{
    (void)num;
    (void)out;
    return 0;
}
#endif

/* A number token -> 1 and its finite double (correctly rounded, as float() reads it); 0 (refer) otherwise. */
static int
number_double(const number *num, double *out)
{
    char buffer[MAX_FLOAT_TOKEN + 1];
    char *stop;
    double value;
    if (simple_double(num, out)) {
        return 1;
    }
    if (num->len > MAX_FLOAT_TOKEN) {
        return 0;
    }
    memcpy(buffer, num->start, (size_t)num->len);
    buffer[num->len] = '\0';
    /* overflow_exception NULL: an overflow gives +-HUGE_VAL, no exception (then refused by isfinite) */
    value = PyOS_string_to_double(buffer, &stop, NULL);
    if (value == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    if (stop != buffer + num->len || !isfinite(value)) {
        return 0;
    }
    *out = value;
    return 1;
}

/* Skips one JSON value of an ignored field (syntax checked); NULL to refer. */
static ptr
skip_value(ptr p, ptr end, int depth)
{
    ptr s;
    Py_ssize_t n;
    number num;
    if (p >= end) {
        return NULL;
    }
    switch (*p) {
    case '"':
        return scan_string(p, end, &s, &n);
    case 't':
        return match_literal(p, end, "true", 4);
    case 'f':
        return match_literal(p, end, "false", 5);
    case 'n':
        return match_literal(p, end, "null", 4);
    case '{':
    case '[': {
        const int object = *p == '{';
        const unsigned char close = object ? '}' : ']';
        if (depth >= MAX_EXTRA_DEPTH) {
            return NULL;
        }
        p = skip_ws(p + 1, end);
        if (p < end && *p == close) {
            return p + 1;
        }
        for (;;) {
            if (object) {
                if (p >= end || *p != '"' || (p = scan_string(p, end, &s, &n)) == NULL) {
                    return NULL;
                }
                p = skip_ws(p, end);
                if (p >= end || *p != ':') {
                    return NULL;
                }
                p = skip_ws(p + 1, end);
            }
            p = skip_value(p, end, depth + 1);
            if (p == NULL) {
                return NULL;
            }
            p = skip_ws(p, end);
            if (p >= end) {
                return NULL;
            }
            if (*p == ',') {
                p = skip_ws(p + 1, end);
                continue;
            }
            return *p == close ? p + 1 : NULL;
        }
    }
    default:
        return scan_number(p, end, &num);
    }
}

/* p at '{' of properties: an object of plain string -> plain string. The position after it, or NULL. */
static ptr
scan_properties(ptr p, ptr end)
{
    ptr s;
    Py_ssize_t n;
    p = skip_ws(p + 1, end);
    if (p < end && *p == '}') {
        return p + 1;
    }
    for (;;) {
        if (p >= end || *p != '"' || (p = scan_string(p, end, &s, &n)) == NULL) {
            return NULL;
        }
        p = skip_ws(p, end);
        if (p >= end || *p != ':') {
            return NULL;
        }
        p = skip_ws(p + 1, end);
        if (p >= end || *p != '"' || (p = scan_string(p, end, &s, &n)) == NULL) {
            return NULL;
        }
        p = skip_ws(p, end);
        if (p >= end) {
            return NULL;
        }
        if (*p == ',') {
            p = skip_ws(p + 1, end);
            continue;
        }
        return *p == '}' ? p + 1 : NULL;
    }
}

/* --- event time ---------------------------------------------------------------------------------------- */

static int
is_leap(int year)
{
    return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
}

static int
days_in_month(int year, int month)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return month == 2 && is_leap(year) ? 29 : days[month - 1];
}

/* Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's days_from_civil); year >= 1. */
static int64_t
days_from_civil(int year, int month, int day)
{
    const int64_t y = (int64_t)year - (month <= 2);
    const int64_t era = y / 400; /* y >= 0 */
    const int64_t yoe = y - era * 400;
    const int64_t doy = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1;
    const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static inline int
two_digits(ptr s, int *out)
{
    if (!IS_DIGIT(s[0]) || !IS_DIGIT(s[1])) {
        return 0;
    }
    *out = (s[0] - '0') * 10 + (s[1] - '0');
    return 1;
}

/* transforms.timefmt.parse_rfc3339_us in C: 1 and the microseconds, or 0 when the reference returns None.
   A fraction finer than a microsecond is truncated; second 60 (a leap second) counts as the next second. */
static int
rfc3339_us(ptr s, Py_ssize_t n, int64_t *out)
{
    int century, year2, month, day, hour, minute, second, year;
    Py_ssize_t i = 19;
    int64_t micros = 0, offset_s = 0;
    if (n < 20 || !two_digits(s, &century) || !two_digits(s + 2, &year2) || s[4] != '-' ||
        !two_digits(s + 5, &month) || s[7] != '-' || !two_digits(s + 8, &day) || (s[10] != 'T' && s[10] != 't') ||
        !two_digits(s + 11, &hour) || s[13] != ':' || !two_digits(s + 14, &minute) || s[16] != ':' ||
        !two_digits(s + 17, &second)) {
        return 0;
    }
    if (s[i] == '.') {
        const Py_ssize_t first = ++i;
        int64_t scale = 100000;
        while (i < n && IS_DIGIT(s[i])) {
            if (i - first < 6) {
                micros += (s[i] - '0') * scale;
                scale /= 10;
            }
            i++;
        }
        if (i == first) {
            return 0;
        }
    }
    if (i >= n) {
        return 0;
    }
    if (s[i] == 'Z' || s[i] == 'z') {
        i++;
    }
    else if (s[i] == '+' || s[i] == '-') {
        int off_hour, off_minute;
        if (n - i < 6 || !two_digits(s + i + 1, &off_hour) || s[i + 3] != ':' ||
            !two_digits(s + i + 4, &off_minute) || off_hour > 23 || off_minute > 59) {
            return 0;
        }
        offset_s = (int64_t)off_hour * 3600 + off_minute * 60;
        if (s[i] == '-') {
            offset_s = -offset_s;
        }
        i += 6;
    }
    else {
        return 0;
    }
    if (i != n) {
        return 0;
    }
    year = century * 100 + year2;
    if (hour > 23 || minute > 59 || second > 60 || year < 1 || month < 1 || month > 12 || day < 1 ||
        day > days_in_month(year, month)) {
        return 0; /* what datetime() refuses, and the reference's own range checks */
    }
    *out = (days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second - offset_s) * 1000000 +
           micros;
    return 1;
}

/* Integer epoch milliseconds (an int token, or an integral finite float) -> microseconds; 0 to refer. */
static int
epoch_ms_us(const number *num, int64_t *out)
{
    int64_t ms;
    if (num->is_int) {
        if (!number_int64(num, &ms)) {
            return 0;
        }
    }
    else {
        double value;
        if (!number_double(num, &value) || floor(value) != value || fabs(value) > 9e15) {
            return 0;
        }
        ms = (int64_t)value;
    }
    if (ms > INT64_MAX / 1000 || ms < INT64_MIN / 1000) {
        return 0;
    }
    *out = ms * 1000;
    return 1;
}

/* --- one record ---------------------------------------------------------------------------------------- */

static int
field_of(ptr name, Py_ssize_t len)
{
    switch (len) {
    case 4:
        return memcmp(name, "page", 4) == 0 ? F_PAGE : -1;
    case 5:
        return memcmp(name, "value", 5) == 0 ? F_VALUE : -1;
    case 7:
        return memcmp(name, "user_id", 7) == 0 ? F_USER_ID : -1;
    case 8:
        return memcmp(name, "event_id", 8) == 0 ? F_EVENT_ID : -1;
    case 10:
        if (memcmp(name, "event_type", 10) == 0) {
            return F_EVENT_TYPE;
        }
        if (memcmp(name, "event_time", 10) == 0) {
            return F_EVENT_TIME;
        }
        return memcmp(name, "properties", 10) == 0 ? F_PROPERTIES : -1;
    default:
        return -1;
    }
}

static int
event_type_ok(ptr s, Py_ssize_t n)
{
    Py_ssize_t i;
    if (n < 1 || n > EVENT_TYPE_MAX || s[0] < 'a' || s[0] > 'z') {
        return 0;
    }
    for (i = 1; i < n; i++) {
        const unsigned char c = s[i];
        if (!((c >= 'a' && c <= 'z') || IS_DIGIT(c) || c == '_')) {
            return 0;
        }
    }
    return 1;
}

/* Scans and checks one payload: 1 if the reference accepts it (fields in *r), 0 to refer. No Python calls
   besides PyOS_string_to_double. */
static int
scan_record(ptr p, ptr end, const limits *lim, record *r)
{
    r->seen = 0; /* the text fields and the time are read only when seen (all required) */
    r->page = NULL;
    r->properties = NULL;
    r->value_is_int = 0;
    p = skip_ws(p, end);
    if (p >= end || *p != '{') {
        return 0;
    }
    p = skip_ws(p + 1, end);
    for (;;) {
        ptr name;
        Py_ssize_t name_len;
        int field;
        number num;
        if (p >= end || *p != '"' || (p = scan_string(p, end, &name, &name_len)) == NULL) {
            return 0; /* also the empty object, which misses the required fields */
        }
        p = skip_ws(p, end);
        if (p >= end || *p != ':') {
            return 0;
        }
        p = skip_ws(p + 1, end);
        if (p >= end) {
            return 0;
        }
        field = field_of(name, name_len);
        if (field >= 0) {
            if (r->seen & (1u << field)) {
                return 0; /* a name given twice */
            }
            r->seen |= 1u << field;
        }
        switch (field) {
        case F_EVENT_ID:
        case F_EVENT_TYPE:
        case F_USER_ID:
            if (*p != '"' || (p = scan_string(p, end, &r->text[field], &r->text_len[field])) == NULL) {
                return 0;
            }
            break;
        case F_EVENT_TIME:
            if (*p == '"') {
                ptr s;
                Py_ssize_t n;
                if ((p = scan_string(p, end, &s, &n)) == NULL || !rfc3339_us(s, n, &r->us)) {
                    return 0;
                }
            }
            else if ((p = scan_number(p, end, &num)) == NULL || !epoch_ms_us(&num, &r->us)) {
                return 0;
            }
            break;
        case F_PAGE:
            if (*p == '"') {
                if ((p = scan_string(p, end, &r->page, &r->page_len)) == NULL || r->page_len > lim->page_max) {
                    return 0;
                }
            }
            else if ((p = match_literal(p, end, "null", 4)) == NULL) {
                return 0;
            }
            break;
        case F_VALUE:
            if ((p = scan_number(p, end, &num)) == NULL) {
                return 0;
            }
            if (num.is_int) {
                if (!number_int64(&num, &r->value_int)) {
                    return 0;
                }
                r->value_is_int = 1;
            }
            else if (!number_double(&num, &r->value_float)) {
                return 0;
            }
            break;
        case F_PROPERTIES:
            r->properties = p;
            if (*p != '{' || (p = scan_properties(p, end)) == NULL) {
                return 0;
            }
            break;
        default:
            if ((p = skip_value(p, end, 1)) == NULL) {
                return 0;
            }
        }
        p = skip_ws(p, end);
        if (p >= end) {
            return 0;
        }
        if (*p == ',') {
            p = skip_ws(p + 1, end);
            continue;
        }
        if (*p != '}') {
            return 0;
        }
        p = skip_ws(p + 1, end);
        break;
    }
    if (p != end || (r->seen & REQUIRED) != REQUIRED) {
        return 0; /* trailing bytes, or a required field missing */
    }
    if (r->text_len[F_EVENT_ID] < 1 || r->text_len[F_EVENT_ID] > lim->event_id_max ||
        !event_type_ok(r->text[F_EVENT_TYPE], r->text_len[F_EVENT_TYPE]) || r->text_len[F_USER_ID] < 1 ||
        r->text_len[F_USER_ID] > lim->user_id_max) {
        return 0;
    }
    return lim->min_us <= r->us && r->us <= lim->latest_us;
}

/* --- Python objects ------------------------------------------------------------------------------------ */

static PyObject *
ascii_str(ptr s, Py_ssize_t n)
{
    PyObject *text = PyUnicode_New(n, 127);
    if (text != NULL && n > 0) {
        memcpy(PyUnicode_1BYTE_DATA(text), s, (size_t)n);
    }
    return text;
}

/* The properties dict of a scanned record: 1 (*out a new reference), 0 when a name repeats (refer), -1 on
   error. The object was checked by scan_properties. */
static int
build_properties(ptr p, ptr end, PyObject **out)
{
    PyObject *dict = PyDict_New();
    Py_ssize_t count = 0;
    if (dict == NULL) {
        return -1;
    }
    p = skip_ws(p + 1, end);
    while (*p == '"') {
        ptr s = NULL;
        Py_ssize_t n = 0;
        PyObject *name, *item;
        int failed;
        p = scan_string(p, end, &s, &n);
        name = ascii_str(s, n);
        if (name == NULL) {
            Py_DECREF(dict);
            return -1;
        }
        p = skip_ws(skip_ws(p, end) + 1, end); /* the ':' */
        p = scan_string(p, end, &s, &n);
        item = ascii_str(s, n);
        if (item == NULL) {
            Py_DECREF(name);
            Py_DECREF(dict);
            return -1;
        }
        failed = PyDict_SetItem(dict, name, item);
        Py_DECREF(name);
        Py_DECREF(item);
        if (failed) {
            Py_DECREF(dict);
            return -1;
        }
        if (PyDict_GET_SIZE(dict) != ++count) {
            Py_DECREF(dict);
            return 0; /* a name given twice: the reference keeps the last; not ours to decide */
        }
        p = skip_ws(p, end);
        if (*p != ',') {
            break; /* the '}' */
        }
        p = skip_ws(p + 1, end);
    }
    *out = dict;
    return 1;
}

/* The Valid tuple (index, event_id, event_type, user_id, event_time_us, page, value, properties, key) of an
   accepted record: 1 (*out a new reference), 0 to refer after all, -1 on error. */
static int
build_valid(Py_ssize_t index, const record *r, ptr end, int key_kind, PyObject *property, PyObject **out)
{
    PyObject *valid, *properties = Py_None, *key, *item;
    int i;
    if (r->properties != NULL) {
        const int built = build_properties(r->properties, end, &properties);
        if (built <= 0) {
            return built;
        }
    }
    else {
        Py_INCREF(Py_None);
    }
    valid = PyTuple_New(9);
    if (valid == NULL) {
        Py_DECREF(properties);
        return -1;
    }
    PyTuple_SET_ITEM(valid, 7, properties); /* the tuple owns it now (and frees what is set on error) */
    if ((item = PyLong_FromSsize_t(index)) == NULL) {
        goto error;
    }
    PyTuple_SET_ITEM(valid, 0, item);
    for (i = 0; i < 3; i++) {
        if ((item = ascii_str(r->text[i], r->text_len[i])) == NULL) {
            goto error;
        }
        PyTuple_SET_ITEM(valid, 1 + i, item);
    }
    if ((item = PyLong_FromLongLong(r->us)) == NULL) {
        goto error;
    }
    PyTuple_SET_ITEM(valid, 4, item);
    if (r->page != NULL) {
        if ((item = ascii_str(r->page, r->page_len)) == NULL) {
            goto error;
        }
    }
    else {
        item = Py_None;
        Py_INCREF(item);
    }
    PyTuple_SET_ITEM(valid, 5, item);
    if (!(r->seen & (1u << F_VALUE))) {
        item = PyLong_FromLong(0);
    }
    else if (r->value_is_int) {
        item = PyLong_FromLongLong(r->value_int);
    }
    else {
        item = PyFloat_FromDouble(r->value_float);
    }
    if (item == NULL) {
        goto error;
    }
    PyTuple_SET_ITEM(valid, 6, item);
    switch (key_kind) {
    case KEY_PAGE:
        key = PyTuple_GET_ITEM(valid, 5);
        break;
    case KEY_EVENT_ID:
        key = PyTuple_GET_ITEM(valid, 1);
        break;
    case KEY_EVENT_TYPE:
        key = PyTuple_GET_ITEM(valid, 2);
        break;
    case KEY_USER_ID:
        key = PyTuple_GET_ITEM(valid, 3);
        break;
    default: /* KEY_PROPERTY */
        key = NULL;
        if (properties != Py_None) {
            key = PyDict_GetItemWithError(properties, property);
            if (key == NULL && PyErr_Occurred()) {
                goto error;
            }
        }
        if (key == NULL) {
            key = Py_None;
        }
    }
    Py_INCREF(key);
    PyTuple_SET_ITEM(valid, 8, key);
    /* Strings, numbers, None and a dict of strings (untracked itself): the tuple can be in no reference cycle,
       so the collector need not visit it (CPython untracks such tuples too, lazily, at its next collection). */
    if (properties == Py_None || !PyObject_GC_IsTracked(properties)) {
        PyObject_GC_UnTrack(valid);
    }
    *out = valid;
    return 1;
error:
    Py_DECREF(valid);
    return -1;
}

static int
append_index(PyObject *list, Py_ssize_t index)
{
    PyObject *item = PyLong_FromSsize_t(index);
    int failed;
    if (item == NULL) {
        return -1;
    }
    failed = PyList_Append(list, item);
    Py_DECREF(item);
    return failed;
}

PyDoc_STRVAR(validate_batch_doc,
             "validate_batch(payloads, min_us, latest_us, max_payload_bytes, event_id_max, user_id_max, page_max,\n"
             "               key_kind, property)\n"
             "--\n\n"
             "(accepted, rest): the Valid tuples of the records the reference accepts as they are, in batch order,\n"
             "and the positions of all other records (for the reference). key_kind: 0 page, 1 event_id,\n"
             "2 event_type, 3 user_id, 4 properties.<property>.");

static PyObject *
validate_batch(PyObject *module, PyObject *args)
{
    PyObject *payloads, *property, *sequence, *accepted = NULL, *rest = NULL, *result;
    long long min_us, latest_us;
    Py_ssize_t max_payload, i;
    int key_kind;
    limits lim;
    (void)module;
    if (!PyArg_ParseTuple(args, "OLLnnnniO:validate_batch", &payloads, &min_us, &latest_us, &max_payload,
                          &lim.event_id_max, &lim.user_id_max, &lim.page_max, &key_kind, &property)) {
        return NULL;
    }
    if (key_kind < KEY_PAGE || key_kind > KEY_PROPERTY) {
        PyErr_Format(PyExc_ValueError, "key_kind must be 0-4, got %d", key_kind);
        return NULL;
    }
    if (key_kind == KEY_PROPERTY && !PyUnicode_Check(property)) {
        PyErr_SetString(PyExc_TypeError, "property must be a str when key_kind is 4");
        return NULL;
    }
    lim.min_us = min_us;
    lim.latest_us = latest_us;
    sequence = PySequence_Fast(payloads, "payloads must be a sequence");
    if (sequence == NULL) {
        return NULL;
    }
    if ((accepted = PyList_New(0)) == NULL || (rest = PyList_New(0)) == NULL) {
        goto error;
    }
    /* The size is read again every time: allocations may run a finalizer that changes a list. */
    for (i = 0; i < PySequence_Fast_GET_SIZE(sequence); i++) {
        PyObject *payload = PySequence_Fast_GET_ITEM(sequence, i);
        record r;
        int taken = 0;
        Py_INCREF(payload);
        if (PyBytes_Check(payload) && PyBytes_GET_SIZE(payload) <= max_payload) {
            const ptr start = (ptr)PyBytes_AS_STRING(payload);
            const ptr end = start + PyBytes_GET_SIZE(payload);
            if (scan_record(start, end, &lim, &r)) {
                PyObject *valid;
                taken = build_valid(i, &r, end, key_kind, property, &valid);
                if (taken == 1) {
                    const int failed = PyList_Append(accepted, valid);
                    Py_DECREF(valid);
                    if (failed) {
                        taken = -1;
                    }
                }
            }
        }
        Py_DECREF(payload);
        if (taken < 0 || (taken == 0 && append_index(rest, i) < 0)) {
            goto error;
        }
    }
    Py_DECREF(sequence);
    result = PyTuple_Pack(2, accepted, rest);
    Py_DECREF(accepted);
    Py_DECREF(rest);
    return result;
error:
    Py_DECREF(sequence);
    Py_XDECREF(accepted);
    Py_XDECREF(rest);
    return NULL;
}

PyDoc_STRVAR(rfc3339_us_doc,
             "rfc3339_us(text: bytes) -> int | None\n--\n\n"
             "The scanner's RFC 3339 reading (microseconds since the epoch) of a plain ASCII date-time, or None\n"
             "when it would refer the record (tests compare it with timefmt.parse_rfc3339_us).");

static PyObject *
py_rfc3339_us(PyObject *module, PyObject *arg)
{
    int64_t us;
    (void)module;
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "rfc3339_us expects bytes");
        return NULL;
    }
    if (!rfc3339_us((ptr)PyBytes_AS_STRING(arg), PyBytes_GET_SIZE(arg), &us)) {
        Py_RETURN_NONE;
    }
    return PyLong_FromLongLong(us);
}

PyDoc_STRVAR(number_doc,
             "number(token: bytes) -> int | float | None\n--\n\n"
             "The scanner's reading of a whole JSON number token as a value (int for an integer, else float), or\n"
             "None when it would refer the record (tests compare it with Python's own reading).");

static PyObject *
py_number(PyObject *module, PyObject *arg)
{
    number num;
    ptr start, end;
    (void)module;
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "number expects bytes");
        return NULL;
    }
    start = (ptr)PyBytes_AS_STRING(arg);
    end = start + PyBytes_GET_SIZE(arg);
    if (scan_number(start, end, &num) != end) {
        Py_RETURN_NONE;
    }
    if (num.is_int) {
        int64_t value;
        if (!number_int64(&num, &value)) {
            Py_RETURN_NONE;
        }
        return PyLong_FromLongLong(value);
    }
    else {
        double value;
        if (!number_double(&num, &value)) {
            Py_RETURN_NONE;
        }
        return PyFloat_FromDouble(value);
    }
}

static PyMethodDef methods[] = {
    {"validate_batch", validate_batch, METH_VARARGS, validate_batch_doc},
    {"rfc3339_us", py_rfc3339_us, METH_O, rfc3339_us_doc},
    {"number", py_number, METH_O, number_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    "transforms._fastjson",
    "The JSON fast path in C (see transforms/fast_json.py): whole batches in one call.",
    -1,
    methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__fastjson(void)
{
    PyObject *module;
    int c;
    for (c = 0; c < 256; c++) {
        PLAIN[c] = c >= 0x20 && c < 0x80 && c != '"' && c != '\\';
    }
    module = PyModule_Create(&module_def);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddStringConstant(module, "EVENT_TYPE_PATTERN", EVENT_TYPE_PATTERN) < 0 ||
        PyModule_AddIntConstant(module, "EVENT_TYPE_MAX", EVENT_TYPE_MAX) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
