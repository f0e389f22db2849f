/*
 * _kscan: scan one slice of a Kineto "traceEvents" array ("[{...},{...}]") into an int64
 * matrix, one row per complete ("ph": "X") event, one column per field. See
 * kineto_scan.py for the layout and the contract; this file only does the byte work.
 * (The matrix is column-major: field f of event r is out[f * capacity + r].)
 *
 * The whole slice is validated as JSON (strings, escapes, numbers, literals, nesting,
 * commas and colons), so a slice cut inside a string or an object is rejected. Valid
 * input outside the common shape gives UNSUPPORTED and the caller decodes the slice with
 * msgspec instead. Nothing is allocated; the GIL is released while scanning.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

enum { ST_OK = 0, ST_UNSUPPORTED = 1, ST_SYNTAX = 2, ST_FULL = 3 };

/* columns: a string takes 4 (hash 1, hash 2, start, end); start -1 = missing/null */
enum {
    F_TS = 0, F_DUR = 1, F_NAME = 2, F_CAT = 6, F_PID = 10, F_TID = 14,
    F_ARG_INT0 = 18, N_INT_ARGS = 10, F_ARG_STR0 = 28, N_STR_ARGS = 3, N_FIELDS = 40
};
#define N_ARG_KEYS (N_INT_ARGS + N_STR_ARGS)
#define NO_INT INT64_MIN
#define MAX_DEPTH 512
#define MAX_INT_DIGITS 18
#define MAX_US_DIGITS 16

static const uint64_t H1_START = 14695981039346656037ULL, H1_MUL = 1099511628211ULL;
static const uint64_t H2_START = 0x9E3779B97F4A7C15ULL, H2_MUL = 0xBF58476D1CE4E5B9ULL;
static const uint64_t MASK63 = 0x7FFFFFFFFFFFFFFFULL;

/* order = kineto_scan.ARG_INT_FIELDS + ARG_STR_FIELDS */
static const char *ARG_KEYS[N_ARG_KEYS] = {
    "device", "stream", "correlation", "External id", "external id", "In msg nelems",
    "Group size", "Seq", "seq", "bytes", "Collective name", "dtype", "Process Group Name",
};
#define MAX_KEY_LEN 32
/* the arg keys of each length, -1 terminated */
static int8_t KEYS_BY_LEN[MAX_KEY_LEN][N_ARG_KEYS + 1];

/* byte classes and the grammar of skipped values */
enum { C_BAD, C_WS, C_NUM, C_STR, C_OPEN_OBJ, C_OPEN_ARR, C_CLOSE_OBJ, C_CLOSE_ARR,
       C_COMMA, C_COLON, C_LIT, N_CLASSES };
enum { S_VALUE, S_KEY, S_COLON, S_NEXT, S_FIRST_VALUE, S_FIRST_KEY, S_ERR, N_STATES };
static uint8_t STOP[256];  /* ends plain string content: '"', '\\', control chars */
static uint8_t CLASS[256];
static uint8_t NEXT[N_STATES][N_CLASSES];

static void init_tables(void) {
    for (int c = 0; c < 32; c++) STOP[c] = 1;
    STOP['"'] = STOP['\\'] = 1;
    CLASS[' '] = CLASS['\t'] = CLASS['\r'] = CLASS['\n'] = C_WS;
    for (const char *p = "-0123456789"; *p; p++) CLASS[(uint8_t)*p] = C_NUM;
    CLASS['t'] = CLASS['f'] = CLASS['n'] = C_LIT;
    CLASS['"'] = C_STR;
    CLASS['{'] = C_OPEN_OBJ; CLASS['['] = C_OPEN_ARR;
    CLASS['}'] = C_CLOSE_OBJ; CLASS[']'] = C_CLOSE_ARR;
    CLASS[','] = C_COMMA; CLASS[':'] = C_COLON;
    memset(NEXT, S_ERR, sizeof NEXT);
    int firsts[2] = {S_VALUE, S_FIRST_VALUE};
    for (int k = 0; k < 2; k++) {
        int st = firsts[k];
        NEXT[st][C_NUM] = NEXT[st][C_STR] = NEXT[st][C_LIT] = S_NEXT;
        NEXT[st][C_OPEN_OBJ] = S_FIRST_KEY;
        NEXT[st][C_OPEN_ARR] = S_FIRST_VALUE;
    }
    NEXT[S_KEY][C_STR] = NEXT[S_FIRST_KEY][C_STR] = S_COLON;
    NEXT[S_COLON][C_COLON] = S_VALUE;
    NEXT[S_NEXT][C_COMMA] = S_VALUE; /* S_KEY inside an object */
    NEXT[S_NEXT][C_CLOSE_OBJ] = NEXT[S_NEXT][C_CLOSE_ARR] = S_NEXT;
    NEXT[S_FIRST_KEY][C_CLOSE_OBJ] = NEXT[S_FIRST_VALUE][C_CLOSE_ARR] = S_NEXT;
    for (int st = 0; st < N_STATES; st++) NEXT[st][C_WS] = (uint8_t)st;
    memset(KEYS_BY_LEN, -1, sizeof KEYS_BY_LEN);
    for (int k = 0; k < N_ARG_KEYS; k++) {
        int8_t *slot = KEYS_BY_LEN[strlen(ARG_KEYS[k])];
        while (*slot >= 0) slot++;
        *slot = (int8_t)k;
    }
}

typedef const uint8_t *bytes_t;

/* ---------------------------------------------------------------------------------- */
/* tokens                                                                              */
/* ---------------------------------------------------------------------------------- */

static inline Py_ssize_t ws(bytes_t a, Py_ssize_t i, Py_ssize_t n) {
    /* JSON whitespace is ' ', '\t', '\r', '\n': all <= ' ' (compact files have none) */
    while (i < n && a[i] <= ' ' && (a[i] == ' ' || a[i] == '\n' || a[i] == '\r' || a[i] == '\t'))
        i++;
    return i;
}

/* a[i] should be the ':' after a key: the index of the value (spaces skipped), or -1.
   Compact files ("key":value) take the first branch. */
static inline Py_ssize_t value_start(bytes_t a, Py_ssize_t i, Py_ssize_t n) {
    if (i + 1 < n && a[i] == ':' && a[i + 1] > ' ') return i + 1;
    i = ws(a, i, n);
    if (i >= n || a[i] != ':') return -1;
    i = ws(a, i + 1, n);
    return i < n ? i : -1;
}

/* after a member's value at a[i]: 1 with *pi at the next key (after ','), 0 with *pi
   after the closing '}', -1 for anything else. Compact files take the first branch. */
static inline int next_member(bytes_t a, Py_ssize_t *pi, Py_ssize_t n) {
    Py_ssize_t i = *pi;
    if (i + 1 < n && a[i] == ',' && a[i + 1] > ' ') {
        *pi = i + 1;
        return 1;
    }
    i = ws(a, i, n);
    if (i >= n) return -1;
    if (a[i] == ',') {
        *pi = ws(a, i + 1, n);
        return 1;
    }
    if (a[i] == '}') {
        *pi = i + 1;
        return 0;
    }
    return -1;
}

static inline int is_hex(uint8_t c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* length of the escape at a[i] == '\\' (0 if invalid) */
static Py_ssize_t escape_len(bytes_t a, Py_ssize_t i, Py_ssize_t n) {
    if (i + 1 >= n) return 0;
    uint8_t e = a[i + 1];
    if (e == 'u') {
        if (i + 5 >= n) return 0;
        for (int k = 2; k < 6; k++)
            if (!is_hex(a[i + k])) return 0;
        return 6;
    }
    if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' || e == 'r' ||
        e == 't')
        return 2;
    return 0;
}

#if defined(__SSE2__)
#include <emmintrin.h>
/* index of the first byte in a[i:n] that ends plain string content ('"', '\\', < 0x20),
   or n: 16 bytes per step */
static inline Py_ssize_t plain_end(bytes_t a, Py_ssize_t i, Py_ssize_t n) {
    const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\');
    const __m128i space = _mm_set1_epi8(0x20), flip = _mm_set1_epi8((char)0x80);
    while (i + 16 <= n) {
        __m128i v = _mm_loadu_si128((const __m128i *)(a + i));
        /* unsigned v < 0x20 as a signed compare of v ^ 0x80 < 0x20 ^ 0x80 */
        __m128i ctl = _mm_cmplt_epi8(_mm_xor_si128(v, flip), _mm_xor_si128(space, flip));
        __m128i hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)), ctl);
        int mask = _mm_movemask_epi8(hit);
        if (mask) return i + __builtin_ctz((unsigned)mask);
        i += 16;
    }
    while (i < n && !STOP[a[i]]) i++;
    return i;
}
#else
static inline Py_ssize_t plain_end(bytes_t a, Py_ssize_t i, Py_ssize_t n) {
    while (i < n && !STOP[a[i]]) i++;
    return i;
}
#endif

/* The state of one scan (scans of different slices may run in several threads). */
typedef struct {
    Py_ssize_t st;  /* the output is column-major: field f of an event at row[f * st] */
    int needle;     /* the bytes '"Collective name' occur in the slice */
    int escaped;    /* the last string_end went through an escape */
} Ctx;

/* Whether the bytes '"Collective name' occur in the slice (the reader then reads the
   collective args). In valid JSON a '"' byte opens a string, closes one (followed by
   punctuation) or is escaped inside one, so checking after opening and escaped quotes
   finds every occurrence. */
static const char NEEDLE[] = "Collective name";
#define NEEDLE_LEN ((Py_ssize_t)sizeof NEEDLE - 1)

static inline void check_needle(Ctx *c, bytes_t a, Py_ssize_t i, Py_ssize_t n) {
    /* a[i - 1] is a quote */
    if (a[i] == 'C' && i + NEEDLE_LEN <= n && !memcmp(a + i, NEEDLE, NEEDLE_LEN)) c->needle = 1;
}

/* a[i] == '"': index after the closing quote, or -1; c->escaped tells whether the string
   holds an escape */
static inline Py_ssize_t string_end(Ctx *c, bytes_t a, Py_ssize_t i, Py_ssize_t n) {
    i++;
    c->escaped = 0;
    if (i < n) check_needle(c, a, i, n);
    for (;;) {
        i = plain_end(a, i, n);
        if (i >= n) return -1;
        if (a[i] == '"') return i + 1;
        if (a[i] != '\\') return -1; /* a raw control character */
        Py_ssize_t k = escape_len(a, i, n);
        if (!k) return -1;
        if (a[i + 1] == '"' && i + 2 < n) check_needle(c, a, i + 2, n);
        c->escaped = 1;
        i += k;
    }
}

/* a[i] == '"': hashes and span into dst[0, st, 2 st, 3 st]; index after the closing
   quote, or -1.
   The raw bytes are hashed 8 at a time (two independent 64-bit hashes, length mixed in). */
static Py_ssize_t hash_string(Ctx *c, bytes_t a, Py_ssize_t i, Py_ssize_t n, int64_t *dst) {
    const Py_ssize_t ST = c->st;
    Py_ssize_t s = i + 1, e = string_end(c, a, i, n);
    if (e < 0) return -1;
    e--; /* the closing quote */
    uint64_t h1 = H1_START ^ (uint64_t)(e - s), h2 = H2_START + (uint64_t)(e - s);
    Py_ssize_t j = s;
    for (; j + 8 <= e; j += 8) {
        uint64_t w;
        memcpy(&w, a + j, 8);
        h1 = (h1 ^ w) * H1_MUL;
        h1 ^= h1 >> 29;
        h2 = (h2 + w) * H2_MUL;
        h2 ^= h2 >> 31;
    }
    if (j < e) {
        uint64_t w = 0;
        memcpy(&w, a + j, (size_t)(e - j));
        h1 = (h1 ^ w) * H1_MUL;
        h1 ^= h1 >> 29;
        h2 = (h2 + w) * H2_MUL;
        h2 ^= h2 >> 31;
    }
    dst[0] = (int64_t)(h1 & MASK63);
    dst[ST] = (int64_t)(h2 & MASK63);
    dst[2 * ST] = s;
    dst[3 * ST] = e;
    return e + 1;
}

static inline int is_digit(uint8_t c) { return c >= '0' && c <= '9'; }

/* end of the run of ASCII digits at a[i]: 8 bytes per step. A byte is a digit when
   neither b - '0' (a borrow: b < '0') nor b + 0x46 (a carry: b > '9') sets its high bit;
   carries and borrows only move up from the first non-digit byte, so its flag is exact. */
static inline Py_ssize_t digits_end(bytes_t a, Py_ssize_t i, Py_ssize_t n) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    /* (the first flagged byte is the lowest one only in little-endian order) */
    while (i + 8 <= n) {
        uint64_t w;
        memcpy(&w, a + i, 8);
        uint64_t bad = ((w - 0x3030303030303030ULL) | (w + 0x4646464646464646ULL)) &
                       0x8080808080808080ULL;
        if (bad) return i + (__builtin_ctzll(bad) >> 3);
        i += 8;
    }
#endif
    while (i < n && is_digit(a[i])) i++;
    return i;
}

/* end of the JSON number at a[i], or -1 */
static Py_ssize_t skip_number(bytes_t a, Py_ssize_t i, Py_ssize_t n) {
    if (a[i] == '-') i++;
    if (i >= n) return -1;
    if (a[i] == '0') {
        i++;
    } else if (a[i] >= '1' && a[i] <= '9') {
        i = digits_end(a, i + 1, n);
    } else {
        return -1;
    }
    if (i < n && a[i] == '.') {
        i++;
        if (i >= n || !is_digit(a[i])) return -1;
        i = digits_end(a, i + 1, n);
    }
    if (i < n && (a[i] == 'e' || a[i] == 'E')) {
        i++;
        if (i < n && (a[i] == '+' || a[i] == '-')) i++;
        if (i >= n || !is_digit(a[i])) return -1;
        i = digits_end(a, i + 1, n);
    }
    return i;
}

/* end of true/false/null at a[i], or -1 */
static Py_ssize_t literal(bytes_t a, Py_ssize_t i, Py_ssize_t n) {
    if (i + 4 <= n && (!memcmp(a + i, "true", 4) || !memcmp(a + i, "null", 4))) return i + 4;
    if (i + 5 <= n && !memcmp(a + i, "false", 5)) return i + 5;
    return -1;
}

/* validate and skip the JSON value at a[i]: its end, or -1 */
static Py_ssize_t skip_value(Ctx *c, bytes_t a, Py_ssize_t i, Py_ssize_t n, uint8_t *stack) {
    int depth = 0, state = S_VALUE;
    while (i < n) {
        int k = CLASS[a[i]];
        int next = NEXT[state][k];
        switch (k) {
        case C_STR:
            if (next == S_ERR || (i = string_end(c, a, i, n)) < 0) return -1;
            break;
        case C_NUM:
            if (next == S_ERR || (i = skip_number(a, i, n)) < 0) return -1;
            break;
        case C_WS:
            i++;
            break;
        case C_LIT:
            if (next == S_ERR || (i = literal(a, i, n)) < 0) return -1;
            break;
        case C_OPEN_OBJ:
        case C_OPEN_ARR:
            if (next == S_ERR || depth == MAX_DEPTH) return -1;
            stack[depth++] = (uint8_t)k;
            i++;
            break;
        case C_CLOSE_OBJ:
        case C_CLOSE_ARR:
            if (next == S_ERR || depth == 0 || stack[depth - 1] + 2 != k) return -1;
            depth--;
            i++;
            break;
        case C_COMMA:
            if (next == S_ERR) return -1;
            if (stack[depth - 1] == C_OPEN_OBJ) next = S_KEY; /* depth > 0 in S_NEXT */
            i++;
            break;
        case C_COLON:
            if (next == S_ERR) return -1;
            i++;
            break;
        default:
            return -1;
        }
        state = next;
        if (depth == 0 && state == S_NEXT) return i;
    }
    return -1;
}

/* kineto_decode.as_int of the plain string a[s:e]: "60" -> 60, "stream 7" -> 7,
   "0x1f" -> 31, no trailing digits -> -1; NO_INT when Python must decide */
static int64_t string_int(bytes_t a, Py_ssize_t s, Py_ssize_t e) {
    while (s < e && a[s] == ' ') s++;
    while (e > s && a[e - 1] == ' ') e--;
    for (Py_ssize_t j = s; j < e; j++)
        if (a[j] >= 128 || a[j] == '\\') return NO_INT;
    if (e - s >= 2 && a[s] == '0' && (a[s + 1] == 'x' || a[s + 1] == 'X')) {
        if (e - s - 2 < 1 || e - s - 2 > 15) return NO_INT;
        int64_t v = 0;
        for (Py_ssize_t j = s + 2; j < e; j++) {
            uint8_t c = a[j];
            int d;
            if (is_digit(c)) d = c - '0';
            else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
            else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
            else return NO_INT;
            v = v * 16 + d;
        }
        return v;
    }
    Py_ssize_t j = e;
    while (j > s && is_digit(a[j - 1])) j--;
    if (j == e) return -1;
    if (e - j > MAX_INT_DIGITS) return NO_INT;
    int64_t v = 0;
    for (Py_ssize_t k = j; k < e; k++) v = v * 10 + (a[k] - '0');
    return (j > s && a[j - 1] == '-') ? -v : v;
}

/* the JSON number at a[i] as an integer into *v (NO_INT: fraction, exponent, too long);
   returns its end, or -1 */
static Py_ssize_t parse_int(bytes_t a, Py_ssize_t i, Py_ssize_t n, int64_t *v) {
    Py_ssize_t end = skip_number(a, i, n);
    if (end < 0) return -1;
    int neg = a[i] == '-';
    i += neg;
    if (end - i > MAX_INT_DIGITS) { *v = NO_INT; return end; }
    int64_t x = 0;
    for (; i < end; i++) {
        if (!is_digit(a[i])) { *v = NO_INT; return end; }
        x = x * 10 + (a[i] - '0');
    }
    *v = neg ? -x : x;
    return end;
}

/* the JSON number of microseconds at a[i] as ns into *v, rounded half to even past the
   third decimal (NO_INT: exponent or too big); returns its end, or -1 */
static Py_ssize_t parse_us(bytes_t a, Py_ssize_t i, Py_ssize_t n, int64_t *v) {
    Py_ssize_t end = skip_number(a, i, n);
    if (end < 0) return -1;
    int neg = a[i] == '-';
    i += neg;
    int64_t ip = 0, frac = 0;
    int nd = 0, fd = 0, extra = 0, rest = 0;
    for (; i < end && is_digit(a[i]); i++) {
        if (++nd > MAX_US_DIGITS) { *v = NO_INT; return end; }
        ip = ip * 10 + (a[i] - '0');
    }
    if (ip > (INT64_MAX - 1000) / 1000) { *v = NO_INT; return end; }
    if (i < end && a[i] == '.') {
        for (i++; i < end && is_digit(a[i]); i++, fd++) {
            int d = a[i] - '0';
            if (fd < 3) frac = frac * 10 + d;
            else if (fd == 3) extra = d;
            else if (d) rest = 1;
        }
    }
    if (i < end) { *v = NO_INT; return end; } /* an exponent */
    for (int k = fd; k < 3; k++) frac *= 10;
    int64_t ns = ip * 1000 + frac;
    if (fd > 3 && (extra > 5 || (extra == 5 && (rest || (ns & 1))))) ns++;
    *v = neg ? -ns : ns;
    return end;
}

/* ---------------------------------------------------------------------------------- */
/* events                                                                              */
/* ---------------------------------------------------------------------------------- */

enum { K_OTHER = -1, K_PH, K_CAT, K_NAME, K_PID, K_TID, K_TS, K_DUR, K_ARGS };

static int event_key(bytes_t a, Py_ssize_t s, Py_ssize_t len) {
    const char *k = (const char *)a + s;
    switch (len) {
    case 2:
        if (!memcmp(k, "ph", 2)) return K_PH;
        if (!memcmp(k, "ts", 2)) return K_TS;
        break;
    case 3:
        if (!memcmp(k, "cat", 3)) return K_CAT;
        if (!memcmp(k, "pid", 3)) return K_PID;
        if (!memcmp(k, "tid", 3)) return K_TID;
        if (!memcmp(k, "dur", 3)) return K_DUR;
        break;
    case 4:
        if (!memcmp(k, "name", 4)) return K_NAME;
        if (!memcmp(k, "args", 4)) return K_ARGS;
        break;
    }
    return K_OTHER;
}

static int arg_key(bytes_t a, Py_ssize_t s, Py_ssize_t len) {
    if (len >= MAX_KEY_LEN) return -1;
    for (const int8_t *k = KEYS_BY_LEN[len]; *k >= 0; k++) {
        const char *key = ARG_KEYS[*k];
        /* keys of one length mostly differ in their first or last byte: no call */
        if (key[0] == (char)a[s] && key[len - 1] == (char)a[s + len - 1] &&
            !memcmp(a + s, key, (size_t)len))
            return *k;
    }
    return -1;
}

#define EMPTY_H1 ((int64_t)(H1_START & MASK63))
#define EMPTY_H2 ((int64_t)(H2_START & MASK63))

static inline void empty_string(int64_t *f, Py_ssize_t st) {
    f[0] = EMPTY_H1;
    f[st] = EMPTY_H2;
    f[2 * st] = f[3 * st] = -1;
}


static void reset(int64_t *row, const Py_ssize_t ST) {
    row[F_TS * ST] = row[F_DUR * ST] = 0;
    empty_string(row + F_NAME * ST, ST);
    empty_string(row + F_CAT * ST, ST);
    row[F_PID * ST] = row[F_TID * ST] = -1;
    row[(F_PID + 1) * ST] = row[(F_TID + 1) * ST] = 0;
    row[(F_PID + 2) * ST] = row[(F_PID + 3) * ST] = -1;
    row[(F_TID + 2) * ST] = row[(F_TID + 3) * ST] = -1;
    for (int f = F_ARG_INT0; f < F_ARG_STR0; f++) row[f * ST] = -1;
    for (int f = F_ARG_STR0; f < N_FIELDS; f += 4) empty_string(row + f * ST, ST);
}

/* the args object at a[i] == '{' into row: its end, or -1; *ok = 0 when a value read is
   not one this scanner converts */
static Py_ssize_t parse_args(Ctx *c, bytes_t a, Py_ssize_t i, Py_ssize_t n, int64_t *row,
                             uint8_t *stack, int *ok) {
    const Py_ssize_t ST = c->st;
    i = ws(a, i + 1, n);
    if (i < n && a[i] == '}') return i + 1;
    for (;;) {
        if (i >= n || a[i] != '"') return -1;
        Py_ssize_t ks = i + 1;
        if ((i = string_end(c, a, i, n)) < 0) return -1;
        int k = arg_key(a, ks, i - 1 - ks);
        if (k < 0 && c->escaped) *ok = 0; /* might spell a known key */
        if ((i = value_start(a, i, n)) < 0) return -1;
        uint8_t ch = a[i];
        if (k >= N_INT_ARGS) { /* a string arg */
            int64_t *f = row + (F_ARG_STR0 + 4 * (k - N_INT_ARGS)) * ST;
            if (ch == '"') {
                i = hash_string(c, a, i, n, f);
            } else if (ch == 'n') { /* null reads as "" */
                i = literal(a, i, n);
                empty_string(f, ST);
            } else {
                *ok = 0;
                i = skip_value(c, a, i, n, stack);
            }
        } else if (k >= 0) { /* an int arg */
            int64_t *f = row + (F_ARG_INT0 + k) * ST;
            if (ch == '-' || is_digit(ch)) {
                i = parse_int(a, i, n, f);
            } else if (ch == '"') { /* ROCm writes "bytes": "60" */
                Py_ssize_t s = i + 1;
                if ((i = string_end(c, a, i, n)) >= 0) *f = string_int(a, s, i - 1);
            } else if (ch == 'n') { /* null reads as the default */
                i = literal(a, i, n);
                *f = -1;
            } else {
                *f = NO_INT;
                i = skip_value(c, a, i, n, stack);
            }
            if (*f == NO_INT) *ok = 0;
        } else {
            i = skip_value(c, a, i, n, stack);
        }
        if (i < 0) return -1;
        int more = next_member(a, &i, n);
        if (more < 0) return -1;
        if (!more) return i;
    }
}

enum { EV_OTHER_PHASE, EV_COMPLETE, EV_UNSUPPORTED };

/* the event object at a[i] == '{' into row: its end, or -1; *kind = EV_... */
static Py_ssize_t parse_event(Ctx *c, bytes_t a, Py_ssize_t i, Py_ssize_t n, int64_t *row,
                              uint8_t *stack, int *kind) {
    const Py_ssize_t ST = c->st;
    int is_x = 0, ok = 1, has_ts = 0, escaped = 0;
    reset(row, ST);
    i = ws(a, i + 1, n);
    if (i < n && a[i] == '}') {
        *kind = EV_OTHER_PHASE;
        return i + 1;
    }
    for (;;) {
        if (i >= n || a[i] != '"') return -1;
        Py_ssize_t ks = i + 1;
        if ((i = string_end(c, a, i, n)) < 0) return -1;
        int k = event_key(a, ks, i - 1 - ks);
        if (k == K_OTHER && c->escaped) escaped = 1;
        if ((i = value_start(a, i, n)) < 0) return -1;
        uint8_t ch = a[i];
        int num = ch == '-' || is_digit(ch);
        if (k == K_PH) {
            if (ch == '"') {
                Py_ssize_t s = i;
                i = string_end(c, a, i, n);
                is_x = i == s + 3 && a[s + 1] == 'X';
                if (c->escaped) escaped = 1; /* "\u0058" */
            } else {
                is_x = 0;
                i = skip_value(c, a, i, n, stack);
            }
        } else if ((k == K_CAT || k == K_NAME || k == K_PID || k == K_TID) && ch == '"') {
            int f = k == K_CAT ? F_CAT : k == K_NAME ? F_NAME : k == K_PID ? F_PID : F_TID;
            i = hash_string(c, a, i, n, row + f * ST);
        } else if ((k == K_PID || k == K_TID) && num) {
            int64_t *f = row + (k == K_PID ? F_PID : F_TID) * ST;
            i = parse_int(a, i, n, f);
            if (*f == NO_INT) ok = 0;
        } else if ((k == K_TS || k == K_DUR) && num) {
            int64_t *f = row + (k == K_TS ? F_TS : F_DUR) * ST;
            i = parse_us(a, i, n, f);
            if (*f == NO_INT || (k == K_DUR && *f < 0)) ok = 0;
            if (k == K_TS) has_ts = 1;
        } else if (k == K_ARGS && ch == '{') {
            i = parse_args(c, a, i, n, row, stack, &ok);
        } else {
            if (k != K_OTHER) ok = 0; /* a known field of another type */
            i = skip_value(c, a, i, n, stack);
        }
        if (i < 0) return -1;
        int more = next_member(a, &i, n);
        if (more < 0) return -1;
        if (!more) break;
    }
    if (escaped) *kind = EV_UNSUPPORTED;
    else if (!is_x) *kind = EV_OTHER_PHASE;
    else *kind = (ok && has_ts) ? EV_COMPLETE : EV_UNSUPPORTED;
    return i; /* after the closing '}' */
}

static int scan_slice(Ctx *c, bytes_t a, Py_ssize_t n, int64_t *out, Py_ssize_t cap,
                      Py_ssize_t *rows_out) {
    uint8_t stack[MAX_DEPTH];
    Py_ssize_t rows = 0;
    int status;
    Py_ssize_t i = ws(a, 0, n);
    *rows_out = 0;
    if (i >= n || a[i] != '[') return ST_SYNTAX;
    i = ws(a, i + 1, n);
    if (i < n && a[i] == ']') return ws(a, i + 1, n) == n ? ST_OK : ST_SYNTAX;
    for (;;) {
        if (i >= n) { status = ST_SYNTAX; break; }
        if (a[i] != '{') { status = ST_UNSUPPORTED; break; } /* msgspec names what it is */
        if (rows == cap) { status = ST_FULL; break; }
        int kind;
        i = parse_event(c, a, i, n, out + rows, stack, &kind);
        if (i < 0) { status = ST_SYNTAX; break; }
        if (kind == EV_UNSUPPORTED) { status = ST_UNSUPPORTED; break; }
        rows += kind == EV_COMPLETE;
        i = ws(a, i, n);
        if (i >= n) { status = ST_SYNTAX; break; }
        if (a[i] == ',') {
            i = ws(a, i + 1, n);
            continue;
        }
        if (a[i] == ']') {
            status = ws(a, i + 1, n) == n ? ST_OK : ST_SYNTAX;
            break;
        }
        status = ST_SYNTAX;
        break;
    }
    *rows_out = rows;
    return status;
}

/* ---------------------------------------------------------------------------------- */
/* Python                                                                              */
/* ---------------------------------------------------------------------------------- */

PyDoc_STRVAR(scan_doc,
"scan(data, out) -> (status, rows, collective)\n\n"
"Scan the slice ``data`` (bytes-like, ``[...]``) into ``out`` (a writable C-contiguous\n"
"int64 buffer of shape (40, capacity): one row per field). status: 0 OK, 1 UNSUPPORTED\n"
"(a value the scanner does not convert), 2 SYNTAX (not JSON), 3 FULL.\n"
"collective: whether the bytes '\"Collective name' occur in the slice.");

static PyObject *py_scan(PyObject *self, PyObject *args) {
    Py_buffer in, out;
    if (!PyArg_ParseTuple(args, "y*w*", &in, &out)) return NULL;
    if (out.len % (Py_ssize_t)(N_FIELDS * sizeof(int64_t)) != 0 ||
        !PyBuffer_IsContiguous(&out, 'C') || !PyBuffer_IsContiguous(&in, 'C')) {
        PyBuffer_Release(&in);
        PyBuffer_Release(&out);
        PyErr_SetString(PyExc_ValueError, "out must be C-contiguous int64 rows of 40 fields");
        return NULL;
    }
    Py_ssize_t cap = out.len / (Py_ssize_t)(N_FIELDS * sizeof(int64_t)), rows = 0;
    int status;
    Ctx ctx = {cap, 0, 0};
    Py_BEGIN_ALLOW_THREADS
    status = scan_slice(&ctx, (bytes_t)in.buf, in.len, (int64_t *)out.buf, cap, &rows);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&in);
    PyBuffer_Release(&out);
    return Py_BuildValue("(inO)", status, rows, ctx.needle ? Py_True : Py_False);
}

static PyMethodDef methods[] = {
    {"scan", py_scan, METH_VARARGS, scan_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_kscan", "Compiled scanner for Kineto traceEvents slices.", -1,
    methods,
};

PyMODINIT_FUNC PyInit__kscan(void) {
    init_tables();
    PyObject *m = PyModule_Create(&module);
    if (m && (PyModule_AddIntConstant(m, "N_FIELDS", N_FIELDS) < 0 ||
              PyModule_AddIntConstant(m, "N_INT_ARGS", N_INT_ARGS) < 0 ||
              PyModule_AddIntConstant(m, "N_STR_ARGS", N_STR_ARGS) < 0)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
