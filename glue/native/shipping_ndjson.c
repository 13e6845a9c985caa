/* shipping_ndjson: proves lines of NDJSON valid under the shipping record's rules, in C.
 *
 * The Glue job json_to_parquet checks every line of a landing file. Doing that in DuckDB SQL
 * costs about as much CPU again as the conversion itself (see docs/PERFORMANCE.md); this module
 * does the common case, a line that is valid and plainly written, in one pass over its bytes,
 * and fills typed columns (Arrow buffers) with its values.
 *
 * It is a *prover*, not a judge: a line it cannot prove valid (bad, or valid but unusual: an
 * escaped key, a duplicated member, a number it cannot convert exactly, ...) is reported as
 * doubtful and the job's exact rules (DuckDB SQL, Python's json module) decide it and say why.
 * So every shortcut here must only ever send a line to the exact rules, never accept one they
 * reject.
 *
 * Strict JSON (RFC 8259): no NaN/Infinity, no trailing commas, no comments, whitespace is space,
 * tab, CR (LF ends the line), strings are valid UTF-8 without raw control characters and their
 * \u escapes name no lone surrogate.
 *
 * Built against the stable ABI of Python 3.9 (Py_LIMITED_API), so one wheel serves Glue's
 * Python 3.9 and newer interpreters.
 */
#define Py_LIMITED_API 0x03090000
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <float.h>
#include <stdio.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* A field's JSON type, as chalicelib.schema's kinds name it (Kind.json); the rest of a field's
 * rule (required, minimum, exclusive, min_length) comes with it: see FieldSpec. */
enum { J_INTEGER, J_NUMBER, J_DATE, J_STRING, J_COUNT };
static const char *const JSON_NAMES[J_COUNT] = {"integer", "number", "date", "string"};

#define MAX_FIELDS 64
#define MAX_DEPTH 64 /* deeper unknown values are left to the exact rules */

typedef struct {
    char *p;
    size_t len, cap;
} Buf;

static int buf_grow(Buf *b, size_t extra) { /* room for extra more bytes */
    size_t need = b->len + extra, cap = b->cap ? b->cap : 4096;
    if (need <= b->cap)
        return 0;
    while (cap < need)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p)
        return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static inline int buf_put(Buf *b, const void *data, size_t n) {
    if (b->len + n > b->cap && buf_grow(b, n))
        return -1;
    memcpy(b->p + b->len, data, n);
    b->len += n;
    return 0;
}

/* One field's rule, as schema.prover_fields() gives it. */
typedef struct {
    const char *name; /* lives as long as the fields tuple */
    int json;
    int optional;     /* absent or null is a null value (else the line is not valid) */
    int has_minimum, exclusive;
    double minimum;
    long min_length;  /* characters; 0: none */
} FieldSpec;

typedef struct {
    const char *name;
    size_t name_len;
    int kind; /* the JSON type, J_* */
    int optional, has_minimum, exclusive;
    double minimum;
    long min_length;
    Buf data;    /* values: int64 / int32 (date) / double, or a string column's bytes */
    Buf offsets; /* string columns: int32 offsets, one more than rows */
    Buf valid;   /* optional columns: validity bitmap (Arrow: bit i of byte i/8, LSB first) */
    Py_ssize_t nulls;
} Column;

/* One line's value of a field, before the line is proven. */
typedef struct {
    int state; /* 0 absent, 1 value, 2 null */
    int64_t i;
    double d;
    int32_t date;
    const char *s;
    size_t slen;
    Buf unescaped;
} Slot;

typedef struct {
    Column columns[MAX_FIELDS];
    Slot slots[MAX_FIELDS];
    int count;
    Py_ssize_t rows;
    Buf doubtful; /* int64 triples: line number, start offset, end offset (without the LF) */
    int64_t lines; /* physical lines seen, blank ones included */
} Prover;

/* -- lexing ------------------------------------------------------------------------------ */

static inline const char *skip_ws(const char *p, const char *end) {
    while (p < end && (unsigned char)*p <= ' ' && (*p == ' ' || *p == '\t' || *p == '\r'))
        p++;
    return p;
}

/* 1: byte needs a look inside a string ('"', '\\', control, non-ASCII) */
static unsigned char STRING_STOP[256];

static void init_tables(void) {
    for (int c = 0; c < 256; c++)
        STRING_STOP[c] = (c == '"' || c == '\\' || c < 0x20 || c >= 0x80);
}

/* Length of the valid UTF-8 sequence at p (non-ASCII lead byte), 0 if invalid. */
static size_t utf8_sequence(const unsigned char *p, const unsigned char *end) {
    unsigned char c = p[0];
    size_t n;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F; /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else
        return 0;
    if ((size_t)(end - p) < n)
        return 0;
    if (p[1] < lo || p[1] > hi)
        return 0;
    for (size_t k = 2; k < n; k++)
        if (p[k] < 0x80 || p[k] > 0xBF)
            return 0;
    return n;
}

/* The code unit of the four hex digits at p (\u escape), or -1. */
static inline long hex4(const char *p) {
    long v = 0;
    for (int k = 0; k < 4; k++) {
        char c = p[k];
        int d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return -1;
        v = v << 4 | d;
    }
    return v;
}

/* Rare in producers' output: kept out of the scanning loops that inline scan_string. */
#if defined(__GNUC__)
#define COLD __attribute__((noinline, cold))
#else
#define COLD
#endif

/* Checks the \u escape at p (at its backslash). Returns the position after it, or NULL. A
 * surrogate must be a high one followed by a low one: JSON text is Unicode, and the exact rules
 * reject a lone surrogate anywhere in the line, unknown members, nested values and the dropped
 * later duplicates of a member included. */
static COLD const char *unicode_escape(const char *p, const char *end) {
    long u = end - p < 6 ? -1 : hex4(p + 2);
    if (u < 0 || (u >= 0xDC00 && u <= 0xDFFF))
        return NULL;
    p += 6;
    if (u >= 0xD800 && u <= 0xDBFF) {
        u = end - p < 6 || p[0] != '\\' || p[1] != 'u' ? -1 : hex4(p + 2);
        if (u < 0xDC00 || u > 0xDFFF)
            return NULL;
        p += 6;
    }
    return p;
}

/* Scans the string starting after its opening quote. Returns the position after the closing
 * quote, or NULL if the string is not strict JSON. *escapes: whether it holds a backslash. */
static const char *scan_string(const char *p, const char *end, int *escapes) {
    *escapes = 0;
    for (;;) {
        /* Eight bytes at a time while none of them needs a look (SWAR: a byte of the word is
         * zero after the XOR, or below 0x20, or has its top bit set). */
        while (end - p >= 8) {
            uint64_t x;
            memcpy(&x, p, 8);
            uint64_t quote = x ^ 0x2222222222222222ULL, slash = x ^ 0x5C5C5C5C5C5C5C5CULL;
            uint64_t stop = ((quote - 0x0101010101010101ULL) & ~quote) |
                            ((slash - 0x0101010101010101ULL) & ~slash) |
                            ((x - 0x2020202020202020ULL) & ~x) | x;
            if (stop & 0x8080808080808080ULL)
                break;
            p += 8;
        }
        while (p < end && !STRING_STOP[(unsigned char)*p])
            p++;
        if (p >= end)
            return NULL;
        unsigned char c = (unsigned char)*p;
        if (c == '"')
            return p + 1;
        if (c == '\\') {
            *escapes = 1;
            if (p + 1 >= end)
                return NULL;
            switch (p[1]) {
            case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
                p += 2;
                break;
            case 'u':
                p = unicode_escape(p, end);
                if (!p)
                    return NULL;
                break;
            default:
                return NULL;
            }
        } else if (c < 0x20)
            return NULL;
        else {
            size_t n = utf8_sequence((const unsigned char *)p, (const unsigned char *)end);
            if (!n)
                return NULL;
            p += n;
        }
    }
}

/* Appends code point u as UTF-8 at o; returns the position after it. */
static char *put_utf8(char *o, long u) {
    if (u < 0x80)
        *o++ = (char)u;
    else if (u < 0x800) {
        *o++ = (char)(0xC0 | (u >> 6));
        *o++ = (char)(0x80 | (u & 0x3F));
    } else if (u < 0x10000) {
        *o++ = (char)(0xE0 | (u >> 12));
        *o++ = (char)(0x80 | ((u >> 6) & 0x3F));
        *o++ = (char)(0x80 | (u & 0x3F));
    } else {
        *o++ = (char)(0xF0 | (u >> 18));
        *o++ = (char)(0x80 | ((u >> 12) & 0x3F));
        *o++ = (char)(0x80 | ((u >> 6) & 0x3F));
        *o++ = (char)(0x80 | (u & 0x3F));
    }
    return o;
}

/* Copies string content [s, e) (between the quotes) into out, unescaped: \u escapes become
 * UTF-8 (json.dumps writes every non-ASCII character so by default), a surrogate pair one code
 * point. Every escape is checked again here, within [s, e), whatever an earlier scan found: the
 * output never outgrows the input (an escape of 2, 6 or 12 bytes gives at most 1, 3 or 4).
 * Returns -1 when out of memory, 1 for a \u0000 (a NUL inside a string: left to the exact rules)
 * or an escape that is not one, else 0. */
static int unescape(const char *s, const char *e, Buf *out) {
    out->len = 0;
    if (buf_grow(out, (size_t)(e - s)))
        return -1;
    char *o = out->p;
    while (s < e) {
        if (*s != '\\') {
            *o++ = *s++;
            continue;
        }
        if (e - s < 2)
            return 1;
        switch (s[1]) {
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case '"': case '\\': case '/': *o++ = s[1]; break;
        case 'u': {
            long u = e - s < 6 ? -1 : hex4(s + 2);
            if (u <= 0 || (u >= 0xDC00 && u <= 0xDFFF))
                return 1;
            s += 6;
            if (u >= 0xD800 && u <= 0xDBFF) {
                long low = e - s < 6 || s[0] != '\\' || s[1] != 'u' ? -1 : hex4(s + 2);
                if (low < 0xDC00 || low > 0xDFFF)
                    return 1;
                u = 0x10000 + ((u - 0xD800) << 10) + (low - 0xDC00);
                s += 6;
            }
            o = put_utf8(o, u);
            continue;
        }
        default:
            return 1;
        }
        s += 2;
    }
    out->len = (size_t)(o - out->p);
    return 0;
}

typedef struct {
    int negative, integral; /* integral: no fraction, no exponent */
    int exact_int;          /* the integer fits int64 (value in i) */
    int64_t i;
    int exact_double;       /* d is the correctly rounded value */
    double d;
} Number;

static const double POW10[23] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
                                 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* Clinger's fast path needs each operation rounded once, to double: where the FPU computes in a
 * wider format (x87), it would round twice, so there numbers are all left to the exact rules. */
#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD == 0
#define FAST_DOUBLES 1
#else
#define FAST_DOUBLES 0
#endif

/* Scans a JSON number. Returns the position after it, or NULL if it is not one. The double is
 * computed only where one IEEE operation on exact operands gives it (Clinger's fast path: at
 * most 2^53 as an integer, times or divided by a power of ten up to 1e22), so it is the correctly
 * rounded value, as DuckDB's cast computes it; other numbers are left to the exact rules. */
static const char *scan_number(const char *p, const char *end, Number *n) {
    uint64_t w = 0;
    /* digits: how many are in w (at most 19: below 2^64); many: there are more. Counting no
     * further keeps the counts in range whatever the length of the number. */
    int digits = 0, frac_digits = 0, many = 0;
    long exp10 = 0;
    n->negative = 0;
    n->integral = 1;
    n->exact_int = 0;
    n->exact_double = 0;
    if (p < end && *p == '-') {
        n->negative = 1;
        p++;
    }
    if (p >= end)
        return NULL;
    if (*p == '0') {
        p++;
        digits = 1;
    } else if (*p >= '1' && *p <= '9') {
        while (p < end && *p >= '0' && *p <= '9') {
            if (digits < 19) {
                w = w * 10 + (uint64_t)(*p - '0');
                digits++;
            } else
                many = 1;
            p++;
        }
    } else
        return NULL;
    if (p < end && *p == '.') {
        n->integral = 0;
        p++;
        if (p >= end || *p < '0' || *p > '9')
            return NULL;
        while (p < end && *p >= '0' && *p <= '9') {
            if (digits < 19) {
                w = w * 10 + (uint64_t)(*p - '0');
                digits++;
                frac_digits++;
            } else
                many = 1;
            p++;
        }
    }
    int exp_ok = 1;
    if (p < end && (*p == 'e' || *p == 'E')) {
        n->integral = 0;
        p++;
        int exp_negative = 0;
        if (p < end && (*p == '+' || *p == '-')) {
            exp_negative = *p == '-';
            p++;
        }
        if (p >= end || *p < '0' || *p > '9')
            return NULL;
        long e = 0;
        while (p < end && *p >= '0' && *p <= '9') {
            if (e < 100000)
                e = e * 10 + (*p - '0');
            else
                exp_ok = 0;
            p++;
        }
        exp10 = exp_negative ? -e : e;
    }
    if (n->integral && !many) {
        /* w holds the whole integer: at most 19 digits, below 2^64 */
        if (!n->negative && w <= (uint64_t)INT64_MAX) {
            n->i = (int64_t)w;
            n->exact_int = 1;
        } else if (n->negative && w <= (uint64_t)INT64_MAX) {
            n->i = -(int64_t)w;
            n->exact_int = 1;
        }
    }
    if (FAST_DOUBLES && !many && exp_ok && w <= (1ULL << 53)) {
        long e = exp10 - frac_digits;
        if (w == 0) {
            n->d = 0.0;
            n->exact_double = 1;
        } else if (e >= 0 && e <= 22) {
            n->d = (double)w * POW10[e];
            n->exact_double = 1;
        } else if (e < 0 && e >= -22) {
            n->d = (double)w / POW10[-e];
            n->exact_double = 1;
        }
        if (n->negative)
            n->d = -n->d;
    }
    return p;
}

static const char *skip_value(const char *p, const char *end, int depth);

static const char *skip_container(const char *p, const char *end, int depth, char close) {
    /* p is after the opening bracket */
    if (depth > MAX_DEPTH)
        return NULL;
    p = skip_ws(p, end);
    if (p < end && *p == close)
        return p + 1;
    for (;;) {
        if (close == '}') {
            int escapes;
            if (p >= end || *p != '"')
                return NULL;
            p = scan_string(p + 1, end, &escapes);
            if (!p)
                return NULL;
            p = skip_ws(p, end);
            if (p >= end || *p != ':')
                return NULL;
            p = skip_ws(p + 1, end);
        }
        p = skip_value(p, end, depth + 1);
        if (!p)
            return NULL;
        p = skip_ws(p, end);
        if (p >= end)
            return NULL;
        if (*p == close)
            return p + 1;
        if (*p != ',')
            return NULL;
        p = skip_ws(p + 1, end);
    }
}

static const char *literal(const char *p, const char *end, const char *word, size_t n) {
    if ((size_t)(end - p) < n || memcmp(p, word, n) != 0)
        return NULL;
    return p + n;
}

/* Validates any JSON value; returns the position after it, or NULL. */
static const char *skip_value(const char *p, const char *end, int depth) {
    if (p >= end)
        return NULL;
    switch (*p) {
    case '"': {
        int escapes;
        return scan_string(p + 1, end, &escapes);
    }
    case '{':
        return skip_container(p + 1, end, depth, '}');
    case '[':
        return skip_container(p + 1, end, depth, ']');
    case 't':
        return literal(p, end, "true", 4);
    case 'f':
        return literal(p, end, "false", 5);
    case 'n':
        return literal(p, end, "null", 4);
    default: {
        Number n;
        return scan_number(p, end, &n);
    }
    }
}

/* -- the rules ------------------------------------------------------------------------------ */

static int days_in_month(int y, int m) {
    static const int DAYS[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return 29;
    return DAYS[m - 1];
}

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian; H. Hinnant's days_from_civil). */
static int32_t days_from_civil(int y, int m, int d) {
    y -= m <= 2;
    int era = (y >= 0 ? y : y - 399) / 400;
    int yoe = y - era * 400;
    int doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return (int32_t)(era * 146097 + doe - 719468);
}

/* "YYYY/MM/DD" (10 bytes, the quotes excluded), a real date, year 1 or later. */
static int parse_date(const char *s, size_t n, int32_t *out) {
    if (n != 10 || s[4] != '/' || s[7] != '/')
        return 0;
    for (int k = 0; k < 10; k++)
        if (k != 4 && k != 7 && (s[k] < '0' || s[k] > '9'))
            return 0;
    int y = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0');
    int m = (s[5] - '0') * 10 + (s[6] - '0');
    int d = (s[8] - '0') * 10 + (s[9] - '0');
    if (y < 1 || m < 1 || m > 12 || d < 1 || d > days_in_month(y, m))
        return 0;
    *out = days_from_civil(y, m, d);
    return 1;
}

/* The double of the JSON number [s, e) that Clinger's fast path leaves out (17 significant
 * digits, as Python writes most computed floats, or large exponents): glibc's strtod rounds
 * correctly, as DuckDB's cast does. Only a normal result counts (zero and subnormals, where the
 * rules' reading might differ in sign or underflow, are left to them); and a locale whose
 * decimal point is not '.' makes strtod stop early, which sends the line there too. The number
 * must be followed, within its line, by a byte that ends it (so strtod reads no further). */
static COLD int slow_double(const char *s, const char *e, const char *end, double *out) {
    if (e >= end || !(*e == ',' || *e == '}' || *e == ']' || *e == ' ' || *e == '\t' || *e == '\r'))
        return 0;
    char *stop;
    double d = strtod(s, &stop);
    if (stop != e || fpclassify(d) != FP_NORMAL)
        return 0;
    *out = d;
    return 1;
}

/* Whether x meets the column's minimum (without one, always). */
static int above_minimum(const Column *c, double x) {
    return !c->has_minimum || (c->exclusive ? x > c->minimum : x >= c->minimum);
}

/* How many characters the UTF-8 bytes [s, s + n) hold. */
static size_t characters(const char *s, size_t n) {
    size_t count = 0;
    for (size_t k = 0; k < n; k++)
        count += ((unsigned char)s[k] & 0xC0) != 0x80;
    return count;
}

/* Reads the value of a schema field into its slot. Returns the position after the value, or
 * NULL when the line cannot be proven valid (for whatever reason: the exact rules will say). */
static const char *read_field(Column *c, Slot *slot, const char *p, const char *end) {
    if (p >= end)
        return NULL;
    char first = *p;
    if (first == 'n') {
        if (!c->optional)
            return NULL;
        slot->state = 2;
        return literal(p, end, "null", 4);
    }
    switch (c->kind) {
    case J_INTEGER:
    case J_NUMBER: {
        if (first != '-' && (first < '0' || first > '9'))
            return NULL;
        Number n;
        const char *first_ptr = p;
        p = scan_number(p, end, &n);
        if (!p || n.negative) /* negative (or -0): left to the exact rules */
            return NULL;
        if (c->kind == J_NUMBER) {
            if (!n.exact_double && !slow_double(first_ptr, p, end, &n.d))
                return NULL;
            if (!above_minimum(c, n.d))
                return NULL;
            slot->d = n.d;
        } else {
            if (!n.integral || !n.exact_int)
                return NULL;
            /* The minimum is a double: an integer beyond 2^53 that rounds onto it is left to
             * the exact rules (below, the comparison is exact). */
            double x = (double)n.i;
            if (!above_minimum(c, x) || (c->has_minimum && x == c->minimum && fabs(x) >= 9007199254740992.0))
                return NULL;
            slot->i = n.i;
        }
        slot->state = 1;
        return p;
    }
    case J_DATE:
    case J_STRING: {
        int escapes;
        if (first != '"')
            return NULL;
        const char *start = p + 1;
        p = scan_string(start, end, &escapes);
        if (!p)
            return NULL;
        const char *s = start;
        size_t n = (size_t)(p - 1 - start);
        if (escapes) {
            if (c->kind == J_DATE || unescape(start, p - 1, &slot->unescaped))
                return NULL;
            s = slot->unescaped.p;
            n = slot->unescaped.len;
        }
        if (c->kind == J_DATE) {
            if (!parse_date(s, n, &slot->date))
                return NULL;
        } else if (c->min_length && (n < (size_t)c->min_length || characters(s, n) < (size_t)c->min_length))
            return NULL;
        slot->s = s;
        slot->slen = n;
        slot->state = 1;
        return p;
    }
    }
    return NULL;
}

/* Whether a and b hold the same n bytes. Field names are 8 to 24 bytes long, mostly: compared
 * as two or three overlapping words instead of a call to memcmp per member (4% of the job). */
static inline int same_bytes(const char *a, const char *b, size_t n) {
    if (n < 8 || n > 24)
        return memcmp(a, b, n) == 0;
    uint64_t x, y;
    memcpy(&x, a, 8);
    memcpy(&y, b, 8);
    if (x != y)
        return 0;
    memcpy(&x, a + n - 8, 8);
    memcpy(&y, b + n - 8, 8);
    if (x != y)
        return 0;
    if (n > 16) {
        memcpy(&x, a + 8, 8);
        memcpy(&y, b + 8, 8);
        return x == y;
    }
    return 1;
}

/* The field named key, or -1. Producers write members in one order, so the search starts at
 * the field after the previous one found (*hint). */
static int find_field(Prover *pr, const char *key, size_t n, int *hint) {
    for (int k = 0; k < pr->count; k++) {
        int f = (*hint + k) % pr->count;
        const char *name = pr->columns[f].name;
        if (pr->columns[f].name_len == n && name[0] == key[0] && same_bytes(name, key, n)) {
            *hint = f + 1;
            return f;
        }
    }
    return -1;
}

/* 1: the line [p, end) is proven valid, its values in the slots. */
static int prove_line(Prover *pr, const char *p, const char *end) {
    int hint = 0;
    for (int f = 0; f < pr->count; f++)
        pr->slots[f].state = 0;
    p = skip_ws(p, end);
    if (p >= end || *p != '{')
        return 0;
    p = skip_ws(p + 1, end);
    if (p < end && *p == '}')
        p++;
    else
        for (;;) {
            int escapes;
            if (p >= end || *p != '"')
                return 0;
            const char *key = p + 1;
            int f = hint < pr->count ? hint : 0;
            Column *expected = &pr->columns[f];
            if ((size_t)(end - key) > expected->name_len && key[expected->name_len] == '"' &&
                same_bytes(key, expected->name, expected->name_len)) {
                /* the member producers write next: its name is plain ASCII (checked in prove) */
                p = key + expected->name_len + 1;
                hint = f + 1;
            } else {
                p = scan_string(key, end, &escapes);
                if (!p || escapes) /* an escaped key may spell a field's name: the exact rules */
                    return 0;
                f = find_field(pr, key, (size_t)(p - 1 - key), &hint);
            }
            p = skip_ws(p, end);
            if (p >= end || *p != ':')
                return 0;
            p = skip_ws(p + 1, end);
            if (f < 0)
                p = skip_value(p, end, 1);
            else if (pr->slots[f].state) /* a repeated member: the exact rules take the first */
                return 0;
            else
                p = read_field(&pr->columns[f], &pr->slots[f], p, end);
            if (!p)
                return 0;
            p = skip_ws(p, end);
            if (p >= end)
                return 0;
            if (*p == '}') {
                p++;
                break;
            }
            if (*p != ',')
                return 0;
            p = skip_ws(p + 1, end);
        }
    if (skip_ws(p, end) != end)
        return 0;
    for (int f = 0; f < pr->count; f++) {
        if (pr->slots[f].state != 1 && !pr->columns[f].optional)
            return 0;
    }
    return 1;
}

static int set_valid_bit(Column *c, Py_ssize_t row, int valid) {
    if ((row & 7) == 0) {
        unsigned char zero = 0;
        if (buf_put(&c->valid, &zero, 1))
            return -1;
    }
    if (valid)
        ((unsigned char *)c->valid.p)[row >> 3] |= (unsigned char)(1u << (row & 7));
    else
        c->nulls++;
    return 0;
}

static int commit_row(Prover *pr) {
    Py_ssize_t row = pr->rows;
    for (int f = 0; f < pr->count; f++) {
        Column *c = &pr->columns[f];
        Slot *s = &pr->slots[f];
        int present = s->state == 1;
        int rc = 0;
        switch (c->kind) {
        case J_INTEGER: {
            int64_t v = present ? s->i : 0;
            rc = buf_put(&c->data, &v, sizeof v);
            break;
        }
        case J_NUMBER: {
            double v = present ? s->d : 0.0;
            rc = buf_put(&c->data, &v, sizeof v);
            break;
        }
        case J_DATE: {
            int32_t v = present ? s->date : 0;
            rc = buf_put(&c->data, &v, sizeof v);
            break;
        }
        default: {
            if (present)
                rc = buf_put(&c->data, s->s, s->slen);
            int32_t offset = (int32_t)c->data.len;
            if (!rc)
                rc = buf_put(&c->offsets, &offset, sizeof offset);
        }
        }
        if (!rc && c->optional)
            rc = set_valid_bit(c, row, present);
        if (rc)
            return -1;
    }
    pr->rows++;
    return 0;
}

static int is_blank(const char *p, const char *end) {
    return skip_ws(p, end) == end;
}

/* Arrow's string offsets are int32: a row whose strings would take a string column past
 * INT32_MAX bytes is left to the exact rules. Only a block larger than that can get there. */
static int row_fits(const Prover *pr) {
    for (int f = 0; f < pr->count; f++) {
        const Column *c = &pr->columns[f];
        const Slot *s = &pr->slots[f];
        if (c->kind == J_STRING && s->state == 1 &&
            s->slen > (size_t)INT32_MAX - c->data.len)
            return 0;
    }
    return 1;
}

/* Proves every line of [data, data + size). Returns -1 when out of memory. */
static int prove_block(Prover *pr, const char *data, size_t size, int64_t first_line) {
    const char *p = data, *end = data + size;
    int64_t line_no = first_line;
    for (int f = 0; f < pr->count; f++) {
        Column *c = &pr->columns[f];
        if (c->kind == J_STRING) {
            int32_t zero = 0;
            if (buf_put(&c->offsets, &zero, sizeof zero))
                return -1;
        }
    }
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = nl ? nl : end;
        if (!is_blank(p, line_end)) {
            if (prove_line(pr, p, line_end) && (size <= (size_t)INT32_MAX || row_fits(pr))) {
                if (commit_row(pr))
                    return -1;
            } else {
                int64_t triple[3] = {line_no, (int64_t)(p - data), (int64_t)(line_end - data)};
                if (buf_put(&pr->doubtful, triple, sizeof triple))
                    return -1;
            }
        }
        line_no++;
        p = nl ? nl + 1 : end;
    }
    pr->lines = line_no - first_line;
    return 0;
}

static void free_prover(Prover *pr) {
    for (int f = 0; f < MAX_FIELDS; f++) {
        free(pr->columns[f].data.p);
        free(pr->columns[f].offsets.p);
        free(pr->columns[f].valid.p);
        free(pr->slots[f].unescaped.p);
    }
    free(pr->doubtful.p);
    free(pr);
}

/* Provers keep their buffers between calls: a block's columns take megabytes, and fresh memory
 * for every block cost a fifth of the time (page faults, and copies as the buffers grew). */
#define POOL_SIZE 8
static Prover *pool[POOL_SIZE];
static int pooled;
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;

static Prover *take_prover(void) {
    Prover *pr = NULL;
    pthread_mutex_lock(&pool_lock);
    if (pooled)
        pr = pool[--pooled];
    pthread_mutex_unlock(&pool_lock);
    if (!pr)
        return calloc(1, sizeof(Prover));
    for (int f = 0; f < MAX_FIELDS; f++) {
        Column *c = &pr->columns[f];
        c->data.len = c->offsets.len = c->valid.len = 0;
        c->nulls = 0;
    }
    pr->doubtful.len = 0;
    pr->rows = pr->lines = 0;
    return pr;
}

static void give_back(Prover *pr) {
    pthread_mutex_lock(&pool_lock);
    if (pooled < POOL_SIZE) {
        pool[pooled++] = pr;
        pr = NULL;
    }
    pthread_mutex_unlock(&pool_lock);
    if (pr)
        free_prover(pr);
}

static PyObject *none(void) {
    Py_INCREF(Py_None);
    return Py_None;
}

/* borrow: the proven rows stay in the prover's buffers, in a capsule that arrow_stream hands to
 * the consumer as they are (copying them into bytes objects, in fresh memory for every block,
 * took a fifth of the time); the prover goes back to the pool when the capsule is collected. */
#define PROVEN_NAME "shipping_ndjson.proven"

static void release_proven(PyObject *proven) {
    give_back((Prover *)PyCapsule_GetPointer(proven, PROVEN_NAME));
}

static PyObject *bytes_of(Buf *b) {
    return PyBytes_FromStringAndSize(b->p ? b->p : "", (Py_ssize_t)b->len);
}

/* -- the Arrow C stream ----------------------------------------------------------------------
 * The proven rows go to DuckDB as an Arrow C stream (the Arrow C data interface, exported
 * through the PyCapsule protocol) made here: the job needs no pyarrow for them, whose import
 * alone took a tenth of the CPU of a clean file's conversion. */

struct ArrowSchema {
    const char *format;
    const char *name;
    const char *metadata;
    int64_t flags;
    int64_t n_children;
    struct ArrowSchema **children;
    struct ArrowSchema *dictionary;
    void (*release)(struct ArrowSchema *);
    void *private_data;
};

struct ArrowArray {
    int64_t length;
    int64_t null_count;
    int64_t offset;
    int64_t n_buffers;
    int64_t n_children;
    const void **buffers;
    struct ArrowArray **children;
    struct ArrowArray *dictionary;
    void (*release)(struct ArrowArray *);
    void *private_data;
};

struct ArrowArrayStream {
    int (*get_schema)(struct ArrowArrayStream *, struct ArrowSchema *out);
    int (*get_next)(struct ArrowArrayStream *, struct ArrowArray *out);
    const char *(*get_last_error)(struct ArrowArrayStream *);
    void (*release)(struct ArrowArrayStream *);
    void *private_data;
};

#define ARROW_FLAG_NULLABLE 2
static const char *const KIND_FORMATS[J_COUNT] = {"l", "g", "tdD", "u"};
static const int64_t EMPTY_BUFFER[1]; /* for a buffer of no bytes, which has no memory of its own */

typedef struct {
    PyObject *next; /* () -> the next capsule of proven rows, or None at the end */
    int count;
    int kinds[MAX_FIELDS];
    char *names[MAX_FIELDS];
    char error[256];
} StreamState;

typedef struct { /* a schema's children and their names, freed with it */
    struct ArrowSchema children[MAX_FIELDS];
    struct ArrowSchema *pointers[MAX_FIELDS];
    char *names[MAX_FIELDS];
    int count;
} SchemaData;

typedef struct { /* a batch's children and buffer lists; the rows themselves are the prover's */
    struct ArrowArray children[MAX_FIELDS];
    struct ArrowArray *pointers[MAX_FIELDS];
    const void *buffers[MAX_FIELDS][3];
    const void *struct_buffers[1];
    PyObject *proven;
} ArrayData;

/* Children are released with their parent (which owns their memory). */
static void release_child_schema(struct ArrowSchema *schema) { schema->release = NULL; }
static void release_child_array(struct ArrowArray *array) { array->release = NULL; }

static void release_schema(struct ArrowSchema *schema) {
    SchemaData *data = schema->private_data;
    for (int f = 0; f < data->count; f++)
        free(data->names[f]);
    free(data);
    schema->release = NULL;
}

static int stream_schema(struct ArrowArrayStream *stream, struct ArrowSchema *out) {
    StreamState *state = stream->private_data;
    SchemaData *data = calloc(1, sizeof(SchemaData));
    if (!data)
        return ENOMEM;
    for (int f = 0; f < state->count; f++) {
        data->names[f] = strdup(state->names[f]);
        if (!data->names[f]) {
            data->count = f;
            struct ArrowSchema partial = {.private_data = data};
            release_schema(&partial);
            return ENOMEM;
        }
        data->children[f] = (struct ArrowSchema){.format = KIND_FORMATS[state->kinds[f]], .name = data->names[f],
                                                 .flags = ARROW_FLAG_NULLABLE, .release = release_child_schema};
        data->pointers[f] = &data->children[f];
    }
    data->count = state->count;
    *out = (struct ArrowSchema){.format = "+s", .name = "", .n_children = state->count,
                                .children = data->pointers, .release = release_schema, .private_data = data};
    return 0;
}

static void release_array(struct ArrowArray *array) {
    ArrayData *data = array->private_data;
    PyGILState_STATE gil = PyGILState_Ensure(); /* consumers release from threads of their own */
    Py_DECREF(data->proven);
    PyGILState_Release(gil);
    free(data);
    array->release = NULL;
}

static const void *buffer_of(const Buf *b) {
    return b->len ? (const void *)b->p : (const void *)EMPTY_BUFFER;
}

/* The struct array of a prover's rows (which stay where they are, kept by `proven`). */
static int export_rows(StreamState *state, PyObject *proven, struct ArrowArray *out) {
    Prover *pr = PyCapsule_GetPointer(proven, PROVEN_NAME);
    if (!pr)
        return EINVAL;
    if (pr->count != state->count) {
        snprintf(state->error, sizeof state->error, "a block of %d fields in a stream of %d", pr->count,
                 state->count);
        return EINVAL;
    }
    ArrayData *data = calloc(1, sizeof(ArrayData));
    if (!data)
        return ENOMEM;
    for (int f = 0; f < pr->count; f++) {
        Column *c = &pr->columns[f];
        int string = c->kind == J_STRING;
        const void **buffers = data->buffers[f];
        buffers[0] = c->nulls ? buffer_of(&c->valid) : NULL;
        buffers[1] = buffer_of(string ? &c->offsets : &c->data);
        buffers[2] = string ? buffer_of(&c->data) : NULL;
        data->children[f] = (struct ArrowArray){.length = pr->rows, .null_count = c->nulls, .n_buffers = string ? 3 : 2,
                                                .buffers = buffers, .release = release_child_array};
        data->pointers[f] = &data->children[f];
    }
    Py_INCREF(proven);
    data->proven = proven;
    *out = (struct ArrowArray){.length = pr->rows, .n_buffers = 1, .n_children = pr->count,
                               .buffers = data->struct_buffers, .children = data->pointers,
                               .release = release_array, .private_data = data};
    return 0;
}

/* Whether an Arrow schema is a struct of the stream's fields, in order, with their types. */
static int same_columns(const StreamState *state, const struct ArrowSchema *schema) {
    if (!schema->format || strcmp(schema->format, "+s") != 0 || schema->n_children != state->count)
        return 0;
    for (int f = 0; f < state->count; f++) {
        const struct ArrowSchema *child = schema->children[f];
        if (!child || !child->format || !child->name || strcmp(child->format, KIND_FORMATS[state->kinds[f]]) != 0 ||
            strcmp(child->name, state->names[f]) != 0)
            return 0;
    }
    return 1;
}

/* A batch the job made itself (the rows the exact rules rescued): an object with
 * __arrow_c_array__ (the Arrow PyCapsule interface) whose array is a struct of the stream's
 * fields. Its array is moved into out (the capsule is left with a released array). */
static int import_batch(StreamState *state, PyObject *batch, struct ArrowArray *out) {
    PyObject *pair = PyObject_CallMethod(batch, "__arrow_c_array__", NULL);
    int rc = EINVAL;
    if (pair && PyTuple_Check(pair) && PyTuple_Size(pair) == 2) {
        struct ArrowSchema *schema = PyCapsule_GetPointer(PyTuple_GetItem(pair, 0), "arrow_schema");
        struct ArrowArray *array = schema ? PyCapsule_GetPointer(PyTuple_GetItem(pair, 1), "arrow_array") : NULL;
        if (array && array->release && same_columns(state, schema)) {
            *out = *array;
            array->release = NULL;
            rc = 0;
        } else if (array)
            snprintf(state->error, sizeof state->error, "a batch whose columns are not the stream's");
    }
    Py_XDECREF(pair);
    return rc;
}

static int stream_next(struct ArrowArrayStream *stream, struct ArrowArray *out) {
    StreamState *state = stream->private_data;
    PyGILState_STATE gil = PyGILState_Ensure();
    int rc = 0;
    PyObject *proven = PyObject_CallObject(state->next, NULL);
    if (!proven) {
        /* The job keeps the exception itself (see convert_native); the consumer gets its text. */
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        PyObject *str = value ? PyObject_Str(value) : NULL;
        PyObject *text = str ? PyUnicode_AsUTF8String(str) : NULL;
        Py_XDECREF(str);
        const char *message = text ? PyBytes_AsString(text) : NULL;
        snprintf(state->error, sizeof state->error, "%s", message ? message : "the next block failed");
        PyErr_Clear();
        Py_XDECREF(text);
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(traceback);
        rc = EIO;
    } else if (proven == Py_None)
        out->release = NULL; /* the end of the stream */
    else {
        rc = PyCapsule_IsValid(proven, PROVEN_NAME) ? export_rows(state, proven, out) : import_batch(state, proven, out);
        if (rc && !state->error[0])
            snprintf(state->error, sizeof state->error, "not a block of proven rows");
        PyErr_Clear();
    }
    Py_XDECREF(proven);
    PyGILState_Release(gil);
    return rc;
}

static const char *stream_error(struct ArrowArrayStream *stream) {
    StreamState *state = stream->private_data;
    return state->error[0] ? state->error : NULL;
}

static void release_stream(struct ArrowArrayStream *stream) {
    StreamState *state = stream->private_data;
    PyGILState_STATE gil = PyGILState_Ensure();
    Py_XDECREF(state->next);
    PyGILState_Release(gil);
    for (int f = 0; f < state->count; f++)
        free(state->names[f]);
    free(state);
    stream->release = NULL;
}

/* The PyCapsule protocol: the capsule's destructor releases a stream nobody took, and frees it. */
static void free_stream_capsule(PyObject *capsule) {
    struct ArrowArrayStream *stream = PyCapsule_GetPointer(capsule, "arrow_array_stream");
    if (!stream)
        return;
    if (stream->release)
        stream->release(stream);
    free(stream);
}

/* One field of the `fields` argument of prove and arrow_stream, as schema.prover_fields()
 * gives it: (name, json, required, minimum, exclusive, min_length). Returns -1, with an exception
 * set, for anything else. Names are letters, digits and _: the prover compares them with keys
 * byte for byte, with no unescaping. */
static int read_field_spec(PyObject *spec, FieldSpec *out) {
    const char *json_name;
    PyObject *minimum;
    int required, exclusive;
    long min_length;
    if (!PyTuple_Check(spec) || PyTuple_Size(spec) != 6) { /* PyArg_ParseTuple would raise SystemError */
        PyErr_SetString(PyExc_TypeError, "fields must be (name, json, required, minimum, exclusive, min_length) tuples");
        return -1;
    }
    if (!PyArg_ParseTuple(spec, "sspOpl", &out->name, &json_name, &required, &minimum, &exclusive, &min_length))
        return -1;
    for (const char *c = out->name; *c; c++)
        if (!(*c == '_' || (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9'))) {
            PyErr_Format(PyExc_ValueError, "field names are letters, digits and _: %s", out->name);
            return -1;
        }
    if (!out->name[0]) {
        PyErr_SetString(PyExc_ValueError, "a field name is empty");
        return -1;
    }
    out->optional = !required;
    out->exclusive = exclusive;
    out->has_minimum = minimum != Py_None;
    out->minimum = 0.0;
    if (out->has_minimum) {
        out->minimum = PyFloat_AsDouble(minimum);
        if (out->minimum == -1.0 && PyErr_Occurred())
            return -1;
        if (isnan(out->minimum)) {
            PyErr_SetString(PyExc_ValueError, "a minimum is a number");
            return -1;
        }
    }
    if (min_length < 0) {
        PyErr_SetString(PyExc_ValueError, "min_length must not be negative");
        return -1;
    }
    out->min_length = min_length;
    for (int k = 0; k < J_COUNT; k++)
        if (strcmp(json_name, JSON_NAMES[k]) == 0) {
            out->json = k;
            return 0;
        }
    PyErr_Format(PyExc_ValueError, "unknown JSON type of a field: %s", json_name);
    return -1;
}

/* arrow_stream(fields, next) -> an "arrow_array_stream" capsule */
static PyObject *arrow_stream(PyObject *self, PyObject *args) {
    PyObject *fields, *next;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!O", &PyTuple_Type, &fields, &next))
        return NULL;
    Py_ssize_t count = PyTuple_Size(fields);
    if (count < 1 || count > MAX_FIELDS || !PyCallable_Check(next)) {
        PyErr_SetString(PyExc_ValueError, "arrow_stream takes 1 to 64 (name, kind) fields and a callable");
        return NULL;
    }
    StreamState *state = calloc(1, sizeof(StreamState));
    struct ArrowArrayStream *stream = calloc(1, sizeof(struct ArrowArrayStream));
    if (!state || !stream) {
        free(state);
        free(stream);
        return PyErr_NoMemory();
    }
    *stream = (struct ArrowArrayStream){.get_schema = stream_schema, .get_next = stream_next,
                                        .get_last_error = stream_error, .release = release_stream,
                                        .private_data = state};
    for (Py_ssize_t f = 0; f < count; f++) {
        FieldSpec spec;
        if (!read_field_spec(PyTuple_GetItem(fields, f), &spec)) {
            state->kinds[f] = spec.json;
            if (!(state->names[f] = strdup(spec.name)))
                PyErr_NoMemory();
        }
        state->count = (int)f + 1;
        if (!state->names[f]) {
            release_stream(stream);
            free(stream);
            return NULL;
        }
    }
    Py_INCREF(next);
    state->next = next;
    PyObject *capsule = PyCapsule_New(stream, "arrow_array_stream", free_stream_capsule);
    if (!capsule) {
        release_stream(stream);
        free(stream);
    }
    return capsule;
}

/* prove(fields, block, size, first_line) -> (rows, columns, doubtful, lines) */
static PyObject *prove(PyObject *self, PyObject *args) {
    PyObject *fields, *block;
    Py_ssize_t size;
    long long first_line;
    (void)self;
    int borrow = 0;
    if (!PyArg_ParseTuple(args, "O!OnL|p", &PyTuple_Type, &fields, &block, &size, &first_line, &borrow))
        return NULL;
    const char *data;
    Py_ssize_t available;
    PyObject *pinned = NULL;
    if (PyBytes_Check(block)) {
        data = PyBytes_AsString(block);
        available = PyBytes_Size(block);
    } else if (PyByteArray_Check(block)) {
        /* The block is read with the GIL released: a memoryview holds an export of the
         * bytearray meanwhile, so that no other thread can resize it (move or free its bytes);
         * the buffer protocol itself is not in the limited API of 3.9. */
        pinned = PyMemoryView_FromObject(block);
        if (!pinned)
            return NULL;
        data = PyByteArray_AsString(block);
        available = PyByteArray_Size(block);
    } else {
        PyErr_SetString(PyExc_TypeError, "block must be bytes or bytearray");
        return NULL;
    }
    if (!data) {
        Py_XDECREF(pinned);
        return NULL;
    }
    if (size < 0 || size > available) {
        Py_XDECREF(pinned);
        PyErr_SetString(PyExc_ValueError, "size is outside the block");
        return NULL;
    }
    Py_ssize_t count = PyTuple_Size(fields);
    /* At least one field: prove_line looks at columns[0] before it looks for a key, and a
     * pooled prover's columns beyond count hold the names of an earlier call's fields. */
    if (count < 1 || count > MAX_FIELDS) {
        Py_XDECREF(pinned);
        PyErr_SetString(PyExc_ValueError, count < 1 ? "no fields" : "too many fields");
        return NULL;
    }
    Prover *pr = take_prover();
    if (!pr) {
        Py_XDECREF(pinned);
        return PyErr_NoMemory();
    }
    pr->count = (int)count;
    for (Py_ssize_t f = 0; f < count; f++) {
        Column *c = &pr->columns[f];
        FieldSpec spec;
        if (read_field_spec(PyTuple_GetItem(fields, f), &spec))
            goto fail;
        c->name = spec.name;
        c->kind = spec.json;
        c->optional = spec.optional;
        c->has_minimum = spec.has_minimum;
        c->exclusive = spec.exclusive;
        c->minimum = spec.minimum;
        c->min_length = spec.min_length;
        c->name_len = strlen(c->name); /* the name lives as long as `fields` */
    }
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = prove_block(pr, data, (size_t)size, (int64_t)first_line);
    Py_END_ALLOW_THREADS
    Py_XDECREF(pinned);
    pinned = NULL;
    if (rc) {
        PyErr_NoMemory();
        goto fail;
    }
    if (borrow) {
        PyObject *proven = PyCapsule_New(pr, PROVEN_NAME, release_proven);
        if (!proven)
            goto fail;
        /* From here the capsule gives the prover back when it is collected. */
        return Py_BuildValue("(nNNL)", pr->rows, proven, bytes_of(&pr->doubtful), (long long)pr->lines);
    }
    PyObject *columns = PyList_New(count);
    if (!columns)
        goto fail;
    for (Py_ssize_t f = 0; f < count; f++) {
        Column *c = &pr->columns[f];
        int optional = c->optional;
        int string = c->kind == J_STRING;
        PyObject *item = Py_BuildValue("(NNNn)", optional && c->nulls ? bytes_of(&c->valid) : none(),
                                       bytes_of(&c->data), string ? bytes_of(&c->offsets) : none(), c->nulls);
        if (!item) {
            Py_DECREF(columns);
            goto fail;
        }
        PyList_SetItem(columns, f, item);
    }
    PyObject *result = Py_BuildValue("(nNNL)", pr->rows, columns, bytes_of(&pr->doubtful), (long long)pr->lines);
    give_back(pr);
    return result;
fail:
    Py_XDECREF(pinned);
    give_back(pr);
    return NULL;
}

static PyMethodDef METHODS[] = {
    {"prove", prove, METH_VARARGS,
     "prove(fields, block, size, first_line, borrow=False) -> (rows, columns, doubtful, lines)\n\n"
     "Proves the lines of block[:size] (bytes or bytearray of whole lines, the first numbered\n"
     "first_line) valid. fields: chalicelib.schema.prover_fields(), a tuple of (name, json,\n"
     "required, minimum, exclusive, min_length), json one of integer, number, date, string.\n"
     "rows: how many lines were proven; columns: per field\n"
     "(validity bitmap or None, values, offsets or None, null count), Arrow buffers of the\n"
     "proven rows; doubtful: int64 triples (line number, start, end) of the other non-blank\n"
     "lines, for the exact rules; lines: how many lines block[:size] holds, blank ones\n"
     "included (a last line without a line end counts).\n\n"
     "borrow=True: columns is instead a capsule of the proven rows, left where they are, for\n"
     "arrow_stream."},
    {"arrow_stream", arrow_stream, METH_VARARGS,
     "arrow_stream(fields, next) -> PyCapsule 'arrow_array_stream'\n\n"
     "An Arrow C stream of struct batches, one field per entry of fields (as prove takes them):\n"
     "each batch is what next() returns: a capsule of proven rows (prove(..., borrow=True)) or\n"
     "an object with __arrow_c_array__ whose struct has the same columns (its array is moved);\n"
     "None ends the stream. For __arrow_c_stream__ (the Arrow PyCapsule interface)."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef MODULE = {PyModuleDef_HEAD_INIT, "shipping_ndjson",
                                    "Proves NDJSON lines valid under the shipping record's rules.",
                                    -1, METHODS, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_shipping_ndjson(void) {
    init_tables();
    return PyModule_Create(&MODULE);
}
