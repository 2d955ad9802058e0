/* safetensors.c — reading (with full validation) and writing safetensors files.
 *
 * Layout: u64 little-endian header length L, L bytes of JSON, then the data
 * section; each tensor's bytes are data[begin, end) in little-endian order.
 * Tensors keep their file dtype (cr_dtensor, dtype.h) until a caller asks for float32.
 * Names are found by binary search in a sorted index (the reader) and by a hash
 * table (the writer), so a file of 200k tensors is not quadratic to read or write. */
#include "safetensors.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "atomic_file.h"
#include "json.h"

/* The largest header we agree to parse (the format's own readers use the same cap). */
#define ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000)
#define ST_META_KEY "__metadata__"

typedef struct {
    char *name;
    cr_dtype dtype;
    int ndim;                    /* 0..4 */
    int64_t shape[CR_MAX_DIMS];
    size_t numel;
    size_t begin, end;           /* byte range in the data section */
} st_entry;

typedef struct {
    char *key, *value;
} st_meta;

struct cr_st_file {
    char *name;                  /* file name, for messages */
    unsigned char *data;         /* the data section (owned copy) */
    size_t data_len;
    st_entry *tensors;
    int count;
    st_entry **by_name;          /* the count entries sorted by name (strcmp): the index */
    st_meta *meta;               /* sorted by key */
    int meta_count;
};

/* ------------------------------------------------------------------ helpers */

/* Reads a little-endian u64 from bytes. */
static uint64_t le64(const unsigned char *b)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | b[i];
    return v;
}

/* True on a little-endian host (where file bytes and memory agree). */
static int host_is_le(void)
{
    const uint16_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

/* Copies n elements of elem bytes from src to dst, converting between little-endian
 * (the file's order) and the host's order (the same operation both ways). */
static void copy_le(void *dst, const void *src, size_t n, size_t elem)
{
    if (host_is_le() || elem == 1) {
        if (n) memcpy(dst, src, n * elem);
        return;
    }
    unsigned char *d = dst;
    const unsigned char *s = src;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < elem; j++) d[i * elem + j] = s[i * elem + elem - 1 - j];
}

/* A malloc'd copy of the NUL-terminated s, or NULL. */
static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* ------------------------------------------------------------------ reader */

void cr_st_free(cr_st_file *f)
{
    if (!f) return;
    for (int i = 0; i < f->count; i++) free(f->tensors[i].name);
    for (int i = 0; i < f->meta_count; i++) {
        free(f->meta[i].key);
        free(f->meta[i].value);
    }
    free(f->tensors);
    free(f->by_name);
    free(f->meta);
    free(f->data);
    free(f->name);
    free(f);
}

/* Checks that a JSON string is a usable C string (no \0 inside); what names it. */
static cr_status check_c_string(const cr_st_file *f, const cr_json *s, const char *what)
{
    if (!cr_json_is_c_string(s->u.string, s->count))
        return cr_fail(CR_EFORMAT, "%s: %s contains a NUL character", f->name, what);
    return CR_OK;
}

/* qsort order of metadata entries by key. */
static int cmp_meta_key(const void *a, const void *b)
{
    return strcmp(((const st_meta *)a)->key, ((const st_meta *)b)->key);
}

/* Sorts the metadata by key (the index cr_st_meta searches) and refuses duplicate keys. */
static cr_status sort_unique_meta(cr_st_file *f)
{
    if (f->meta_count < 2) return CR_OK;
    qsort(f->meta, (size_t)f->meta_count, sizeof *f->meta, cmp_meta_key);
    for (int i = 1; i < f->meta_count; i++)
        if (strcmp(f->meta[i - 1].key, f->meta[i].key) == 0)
            return cr_fail(CR_EFORMAT, "%s: duplicate __metadata__ key '%s'", f->name, f->meta[i].key);
    return CR_OK;
}

/* Reads __metadata__ (an object of string values, unique keys) into f->meta. */
static cr_status read_metadata(cr_st_file *f, const cr_json *obj)
{
    if (obj->type != CR_JSON_OBJECT)
        return cr_fail(CR_EFORMAT, "%s: __metadata__ is a %s, expected an object of strings",
                       f->name, cr_json_type_name(obj->type));
    if (obj->count > INT_MAX) return cr_fail(CR_EFORMAT, "%s: too many metadata entries", f->name);
    f->meta = calloc(obj->count ? obj->count : 1, sizeof *f->meta);
    if (!f->meta) return cr_fail(CR_ENOMEM, "%s: out of memory for metadata", f->name);
    for (size_t i = 0; i < obj->count; i++) {
        const cr_json_member *m = &obj->u.members[i];
        if (!cr_json_is_c_string(m->key, m->key_len))
            return cr_fail(CR_EFORMAT, "%s: a __metadata__ key contains a NUL character", f->name);
        if (m->value.type != CR_JSON_STRING)
            return cr_fail(CR_EFORMAT, "%s: __metadata__ value of '%s' is a %s, expected a string",
                           f->name, m->key, cr_json_type_name(m->value.type));
        cr_status st = check_c_string(f, &m->value, "a __metadata__ value");
        if (st) return st;
        st_meta *dst = &f->meta[f->meta_count];
        dst->key = dup_str(m->key);
        dst->value = dup_str(m->value.u.string);
        f->meta_count++;
        if (!dst->key || !dst->value)
            return cr_fail(CR_ENOMEM, "%s: out of memory for metadata", f->name);
    }
    return sort_unique_meta(f);
}

/* Reads the "dtype" field of tensor e (one of the dtypes of dtype.h). */
static cr_status read_dtype(const cr_st_file *f, st_entry *e, const cr_json *v)
{
    if (!v || v->type != CR_JSON_STRING)
        return cr_fail(CR_EFORMAT, "%s: tensor '%s': dtype %s", f->name, e->name,
                       v ? "is not a string" : "is missing");
    if (cr_dtype_from_name(v->u.string, v->count, &e->dtype)) return CR_OK;
    return cr_fail(CR_EFORMAT,
                   "%s: tensor '%s': unsupported dtype '%.16s' (expected F32, F16, BF16, F64, I8, U8, I32 or I64)",
                   f->name, e->name, cr_json_is_c_string(v->u.string, v->count) ? v->u.string : "?");
}

/* Reads the "shape" field of tensor e (0..4 non-negative integers) and its element count. */
static cr_status read_shape(const cr_st_file *f, st_entry *e, const cr_json *v)
{
    if (!v || v->type != CR_JSON_ARRAY)
        return cr_fail(CR_EFORMAT, "%s: tensor '%s': shape %s", f->name, e->name,
                       v ? "is not an array" : "is missing");
    if (v->count > CR_MAX_DIMS)
        return cr_fail(CR_EFORMAT, "%s: tensor '%s': shape has rank %zu, expected 0..%d",
                       f->name, e->name, v->count, CR_MAX_DIMS);
    e->ndim = (int)v->count;
    size_t numel = 1;
    for (int i = 0; i < e->ndim; i++) {
        const cr_json *d = &v->u.items[i];
        if (d->type != CR_JSON_INT || d->u.integer > (uint64_t)INT64_MAX)
            return cr_fail(CR_EFORMAT, "%s: tensor '%s': shape entry %d is not a non-negative integer",
                           f->name, e->name, i);
        e->shape[i] = (int64_t)d->u.integer;
        if (d->u.integer > SIZE_MAX ||
            cr_mul_checked(numel, (size_t)d->u.integer, SIZE_MAX, "shape", &numel) != CR_OK)
            return cr_fail(CR_EFORMAT, "%s: tensor '%s': shape element count overflows", f->name, e->name);
    }
    for (int i = e->ndim; i < CR_MAX_DIMS; i++) e->shape[i] = 1;
    e->numel = numel;
    return CR_OK;
}

/* Reads "data_offsets" [begin, end] of tensor e and checks them against the data section and shape. */
static cr_status read_offsets(const cr_st_file *f, st_entry *e, const cr_json *v)
{
    if (!v || v->type != CR_JSON_ARRAY || v->count != 2 || v->u.items[0].type != CR_JSON_INT ||
        v->u.items[1].type != CR_JSON_INT)
        return cr_fail(CR_EFORMAT, "%s: tensor '%s': data_offsets %s, expected [begin, end]",
                       f->name, e->name, v ? "is malformed" : "is missing");
    uint64_t begin = v->u.items[0].u.integer, end = v->u.items[1].u.integer;
    if (begin > end)
        return cr_fail(CR_EFORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] has begin > end",
                       f->name, e->name, (unsigned long long)begin, (unsigned long long)end);
    if (end > f->data_len)
        return cr_fail(CR_EFORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] past the data section of %zu bytes",
                       f->name, e->name, (unsigned long long)begin, (unsigned long long)end, f->data_len);
    e->begin = (size_t)begin;
    e->end = (size_t)end;
    size_t bytes = 0;
    if (cr_mul_checked(e->numel, cr_dtype_size(e->dtype), SIZE_MAX, "bytes", &bytes) != CR_OK ||
        bytes != e->end - e->begin)
        return cr_fail(CR_EFORMAT, "%s: tensor '%s': data_offsets span %zu bytes but shape and dtype %s need %zu x %zu",
                       f->name, e->name, e->end - e->begin, cr_dtype_name(e->dtype), e->numel,
                       cr_dtype_size(e->dtype));
    return CR_OK;
}

/* Checks that a tensor entry object has exactly the keys dtype, shape, data_offsets once each. */
static cr_status check_entry_keys(const cr_st_file *f, const char *name, const cr_json *obj)
{
    static const char *known[] = {"dtype", "shape", "data_offsets"};
    int seen[3] = {0, 0, 0};
    for (size_t i = 0; i < obj->count; i++) {
        const cr_json_member *m = &obj->u.members[i];
        int k = -1;
        for (int j = 0; j < 3; j++)
            if (m->key_len == strlen(known[j]) && memcmp(m->key, known[j], m->key_len) == 0) k = j;
        if (k < 0)
            return cr_fail(CR_EFORMAT, "%s: tensor '%s': unknown key '%.32s'", f->name, name,
                           cr_json_is_c_string(m->key, m->key_len) ? m->key : "?");
        if (seen[k]++)
            return cr_fail(CR_EFORMAT, "%s: tensor '%s': duplicate key '%s'", f->name, name, known[k]);
    }
    return CR_OK;
}

/* Reads one tensor entry (name -> {dtype, shape, data_offsets}) into the next slot of f. */
static cr_status read_entry(cr_st_file *f, const cr_json_member *m)
{
    if (!cr_json_is_c_string(m->key, m->key_len))
        return cr_fail(CR_EFORMAT, "%s: a tensor name contains a NUL character", f->name);
    if (m->key_len == 0) return cr_fail(CR_EFORMAT, "%s: a tensor has an empty name", f->name);
    if (m->value.type != CR_JSON_OBJECT)
        return cr_fail(CR_EFORMAT, "%s: tensor '%s' is a %s, expected an object", f->name, m->key,
                       cr_json_type_name(m->value.type));
    cr_status st = check_entry_keys(f, m->key, &m->value);
    if (st) return st;
    st_entry *e = &f->tensors[f->count];
    memset(e, 0, sizeof *e);
    if (!(e->name = dup_str(m->key))) return cr_fail(CR_ENOMEM, "%s: out of memory", f->name);
    f->count++;
    if ((st = read_dtype(f, e, cr_json_get(&m->value, "dtype")))) return st;
    if ((st = read_shape(f, e, cr_json_get(&m->value, "shape")))) return st;
    return read_offsets(f, e, cr_json_get(&m->value, "data_offsets"));
}

/* qsort order of entry pointers by name. */
static int cmp_by_name(const void *a, const void *b)
{
    return strcmp((*(st_entry *const *)a)->name, (*(st_entry *const *)b)->name);
}

/* qsort order of entry pointers by (begin, end). */
static int cmp_by_offset(const void *a, const void *b)
{
    const st_entry *x = *(st_entry *const *)a, *y = *(st_entry *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return (x->end > y->end) - (x->end < y->end);
}

/* Builds the name index f->by_name, refusing duplicate names, then refuses overlapping
 * byte ranges (both O(n log n)). */
static cr_status index_unique_and_disjoint(cr_st_file *f)
{
    size_t n = f->count ? (size_t)f->count : 1;
    f->by_name = malloc(n * sizeof *f->by_name);
    st_entry **order = malloc(n * sizeof *order);
    if (!f->by_name || !order) {
        free(order);
        return cr_fail(CR_ENOMEM, "%s: out of memory for the index of %d tensors", f->name, f->count);
    }
    for (int i = 0; i < f->count; i++) f->by_name[i] = &f->tensors[i];
    cr_status st = CR_OK;
    qsort(f->by_name, (size_t)f->count, sizeof *f->by_name, cmp_by_name);
    for (int i = 1; i < f->count && !st; i++)
        if (strcmp(f->by_name[i - 1]->name, f->by_name[i]->name) == 0)
            st = cr_fail(CR_EFORMAT, "%s: duplicate tensor name '%s'", f->name, f->by_name[i]->name);
    memcpy(order, f->by_name, (size_t)f->count * sizeof *order);
    qsort(order, (size_t)f->count, sizeof *order, cmp_by_offset);
    const st_entry *last = NULL;  /* the non-empty range reaching furthest so far */
    for (int i = 0; i < f->count && !st; i++) {
        const st_entry *e = order[i];
        if (e->begin == e->end) continue;
        if (last && e->begin < last->end)
            st = cr_fail(CR_EFORMAT, "%s: tensors '%s' and '%s' overlap (data_offsets [%zu, %zu] and [%zu, %zu])",
                         f->name, last->name, e->name, last->begin, last->end, e->begin, e->end);
        if (!last || e->end > last->end) last = e;
    }
    free(order);
    return st;
}

/* Reads the parsed header object (tensors and __metadata__) into f. */
static cr_status read_header(cr_st_file *f, const cr_json *root)
{
    if (root->type != CR_JSON_OBJECT)
        return cr_fail(CR_EFORMAT, "%s: header is a JSON %s, expected an object", f->name,
                       cr_json_type_name(root->type));
    if (root->count > INT_MAX) return cr_fail(CR_EFORMAT, "%s: too many tensors", f->name);
    f->tensors = calloc(root->count ? root->count : 1, sizeof *f->tensors);
    if (!f->tensors) return cr_fail(CR_ENOMEM, "%s: out of memory", f->name);
    int have_meta = 0;
    for (size_t i = 0; i < root->count; i++) {
        const cr_json_member *m = &root->u.members[i];
        cr_status st;
        if (m->key_len == strlen(ST_META_KEY) && memcmp(m->key, ST_META_KEY, m->key_len) == 0) {
            if (have_meta++) return cr_fail(CR_EFORMAT, "%s: duplicate __metadata__", f->name);
            st = read_metadata(f, &m->value);
        } else {
            st = read_entry(f, m);
        }
        if (st) return st;
    }
    return index_unique_and_disjoint(f);
}

/* Checks the length prefix against the buffer; sets the header length. */
static cr_status read_prefix(const char *name, const unsigned char *b, size_t len, size_t *header_len)
{
    if (len < 8)
        return cr_fail(CR_EFORMAT, "%s: file of %zu bytes is too short for the 8-byte header length",
                       name, len);
    uint64_t n = le64(b);
    if (n > ST_MAX_HEADER)
        return cr_fail(CR_EFORMAT, "%s: header length %llu exceeds the limit of %llu bytes", name,
                       (unsigned long long)n, (unsigned long long)ST_MAX_HEADER);
    if (n > len - 8)
        return cr_fail(CR_EFORMAT, "%s: header length %llu is larger than the %zu bytes after the prefix",
                       name, (unsigned long long)n, len - 8);
    *header_len = (size_t)n;
    return CR_OK;
}

/* Parses and validates bytes[0..len) into a new file object that owns a copy of the data. */
static cr_status parse_buffer(cr_st_file **out, const unsigned char *b, size_t len, const char *name)
{
    size_t hlen = 0;
    cr_status st = read_prefix(name, b, len, &hlen);
    if (st) return st;
    cr_st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->name = dup_str(name))) {
        free(f);
        return cr_fail(CR_ENOMEM, "%s: out of memory", name);
    }
    f->data_len = len - 8 - hlen;
    cr_json root;
    st = cr_json_parse((const char *)b + 8, hlen, name, &root);
    if (st == CR_OK) {
        st = read_header(f, &root);
        cr_json_free(&root);
    }
    if (st == CR_OK) {
        f->data = malloc(f->data_len ? f->data_len : 1);
        if (!f->data) st = cr_fail(CR_ENOMEM, "%s: out of memory for %zu data bytes", name, f->data_len);
        else if (f->data_len) memcpy(f->data, b + 8 + hlen, f->data_len);
    }
    if (st) {
        cr_st_free(f);
        return st;
    }
    *out = f;
    return CR_OK;
}

cr_status cr_st_parse(cr_st_file **out, const void *bytes, size_t len, const char *name)
{
    *out = NULL;
    if (!name) name = "(memory)";
    if (!bytes && len) return cr_fail(CR_EINVAL, "%s: NULL buffer of %zu bytes", name, len);
    return parse_buffer(out, bytes ? bytes : "", len, name);
}

/* Reads the whole file at path into a new buffer (*len bytes). */
static cr_status read_file(const char *path, unsigned char **buf, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return cr_fail(CR_EIO, "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(fp), &sb) != 0) {
        int err = errno;
        fclose(fp);
        return cr_fail(CR_EIO, "%s: %s", path, strerror(err));
    }
    if (!S_ISREG(sb.st_mode)) {
        fclose(fp);
        return cr_fail(CR_EIO, "%s: not a regular file", path);
    }
    if ((uintmax_t)sb.st_size > SIZE_MAX - 1) {
        fclose(fp);
        return cr_fail(CR_EIO, "%s: file too large", path);
    }
    size_t n = (size_t)sb.st_size;
    unsigned char *b = malloc(n ? n : 1);
    if (!b) {
        fclose(fp);
        return cr_fail(CR_ENOMEM, "%s: out of memory for %zu bytes", path, n);
    }
    size_t got = fread(b, 1, n, fp);
    int err = ferror(fp) ? errno : 0;
    fclose(fp);
    if (got != n) {
        free(b);
        return cr_fail(CR_EIO, "%s: read %zu of %zu bytes: %s", path, got, n,
                       err ? strerror(err) : "file shrank while reading");
    }
    *buf = b;
    *len = n;
    return CR_OK;
}

cr_status cr_st_load(cr_st_file **out, const char *path)
{
    *out = NULL;
    unsigned char *buf = NULL;
    size_t len = 0;
    cr_status st = read_file(path, &buf, &len);
    if (st) return st;
    st = parse_buffer(out, buf, len, path);
    free(buf);
    return st;
}

int cr_st_count(const cr_st_file *f) { return f->count; }

const char *cr_st_name(const cr_st_file *f, int i)
{
    return (i >= 0 && i < f->count) ? f->tensors[i].name : NULL;
}

/* bsearch order of a name against an index entry. */
static int cmp_name_key(const void *key, const void *elem)
{
    return strcmp((const char *)key, (*(st_entry *const *)elem)->name);
}

/* The entry named name, or NULL (binary search in the sorted index: O(log n)). */
static const st_entry *find_entry(const cr_st_file *f, const char *name)
{
    if (!name || f->count == 0) return NULL;
    st_entry *const *hit = bsearch(name, f->by_name, (size_t)f->count, sizeof *f->by_name, cmp_name_key);
    return hit ? *hit : NULL;
}

int cr_st_has(const cr_st_file *f, const char *name) { return find_entry(f, name) != NULL; }

cr_status cr_st_info(const cr_st_file *f, const char *name, cr_dtype *dtype, int *ndim,
                     int64_t shape[CR_MAX_DIMS])
{
    const st_entry *e = find_entry(f, name);
    if (!e) return cr_fail(CR_EINVAL, "%s: no tensor named '%s'", f->name, name ? name : "(null)");
    if (dtype) *dtype = e->dtype;
    if (ndim) *ndim = e->ndim;
    if (shape) memcpy(shape, e->shape, sizeof e->shape);
    return CR_OK;
}

/* Copies entry e's bytes (little-endian in the file) into a new typed tensor t. */
static cr_status copy_entry(const cr_st_file *f, const st_entry *e, cr_dtensor *t)
{
    cr_status st = cr_dtensor_alloc(t, e->dtype, e->ndim, e->shape);
    if (st) {
        char why[256];
        snprintf(why, sizeof why, "%s", cr_last_error());
        return cr_fail(st, "%s: tensor '%s': %s", f->name, e->name, why);
    }
    copy_le(t->data, f->data + e->begin, e->numel, cr_dtype_size(e->dtype));
    return CR_OK;
}

cr_status cr_st_get_typed(const cr_st_file *f, const char *name, cr_dtensor *t)
{
    memset(t, 0, sizeof *t);
    const st_entry *e = find_entry(f, name);
    if (!e) return cr_fail(CR_EINVAL, "%s: no tensor named '%s'", f->name, name ? name : "(null)");
    return copy_entry(f, e, t);
}

cr_status cr_st_get(const cr_st_file *f, const char *name, cr_tensor *t)
{
    memset(t, 0, sizeof *t);
    const st_entry *e = find_entry(f, name);
    if (!e) return cr_fail(CR_EINVAL, "%s: no tensor named '%s'", f->name, name ? name : "(null)");
    if (e->numel == 0)
        return cr_fail(CR_EINVAL, "%s: tensor '%s' has no elements; cr_tensor cannot hold it",
                       f->name, name);
    cr_dtensor typed;
    cr_status st = copy_entry(f, e, &typed);
    if (st) return st;
    st = cr_dtensor_to_tensor(t, &typed);
    cr_dtensor_free(&typed);
    if (st) {
        char why[256];
        snprintf(why, sizeof why, "%s", cr_last_error());
        return cr_fail(st, "%s: tensor '%s': %s", f->name, name, why);
    }
    return CR_OK;
}

/* bsearch order of a key against a metadata entry. */
static int cmp_meta_search(const void *key, const void *elem)
{
    return strcmp((const char *)key, ((const st_meta *)elem)->key);
}

const char *cr_st_meta(const cr_st_file *f, const char *key)
{
    if (!key || f->meta_count == 0) return NULL;
    const st_meta *m = bsearch(key, f->meta, (size_t)f->meta_count, sizeof *f->meta, cmp_meta_search);
    return m ? m->value : NULL;
}

/* ------------------------------------------------------------------ writer */

typedef struct {
    char *name;
    cr_dtype dtype;
    int ndim;                    /* 0..4 */
    int64_t shape[CR_MAX_DIMS];
    size_t numel;
    void *data;                  /* numel elements of dtype, host order */
} wr_tensor;

struct cr_st_writer {
    wr_tensor *tensors;
    size_t count, cap;
    size_t *slots;               /* hash table of tensor indices + 1 (0: empty), for names */
    size_t slot_cap;             /* a power of two, at least twice count */
    size_t data_len;             /* bytes of the data section so far */
    st_meta *meta;
    size_t meta_count, meta_cap;
};

/* A growable text buffer for the header. */
typedef struct {
    char *s;
    size_t len, cap;
    int failed;  /* an allocation failed; further appends do nothing */
} strbuf;

/* Appends n bytes to b (records failure instead of returning it). */
static void sb_put(strbuf *b, const char *s, size_t n)
{
    if (b->failed) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *bigger = realloc(b->s, cap);
        if (!bigger) { b->failed = 1; return; }
        b->s = bigger;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

/* Appends a NUL-terminated string. */
static void sb_puts(strbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

/* Appends an unsigned integer in decimal. */
static void sb_putu(strbuf *b, unsigned long long v)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%llu", v);
    sb_put(b, tmp, (size_t)n);
}

/* Appends s as a quoted JSON string (", \ and control characters escaped). */
static void sb_put_json_string(strbuf *b, const char *s)
{
    sb_put(b, "\"", 1);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\') {
            char esc[2] = {'\\', (char)*c};
            sb_put(b, esc, 2);
        } else if (*c < 0x20) {
            char esc[8];
            snprintf(esc, sizeof esc, "\\u%04x", *c);
            sb_put(b, esc, 6);
        } else {
            sb_put(b, (const char *)c, 1);
        }
    }
    sb_put(b, "\"", 1);
}

cr_status cr_st_writer_new(cr_st_writer **out)
{
    *out = calloc(1, sizeof **out);
    if (!*out) return cr_fail(CR_ENOMEM, "safetensors writer: out of memory");
    return CR_OK;
}

void cr_st_writer_free(cr_st_writer *w)
{
    if (!w) return;
    for (size_t i = 0; i < w->count; i++) {
        free(w->tensors[i].name);
        cr_aligned_free(w->tensors[i].data);
    }
    free(w->slots);
    for (size_t i = 0; i < w->meta_count; i++) {
        free(w->meta[i].key);
        free(w->meta[i].value);
    }
    free(w->tensors);
    free(w->meta);
    free(w);
}

/* Checks that s is a non-empty, valid UTF-8 string; what names it in the message. */
static cr_status check_writer_string(const char *s, const char *what, int allow_empty)
{
    if (!s) return cr_fail(CR_EINVAL, "safetensors writer: %s is NULL", what);
    if (!allow_empty && !*s) return cr_fail(CR_EINVAL, "safetensors writer: %s is empty", what);
    if (!cr_json_utf8_valid(s, strlen(s)))
        return cr_fail(CR_EINVAL, "safetensors writer: %s '%s' is not valid UTF-8", what, s);
    return CR_OK;
}

/* Makes room for one more item in a growable array of elem-sized items. */
static cr_status grow_array(void **items, size_t count, size_t *cap, size_t elem)
{
    if (count < *cap) return CR_OK;
    size_t new_cap = *cap ? *cap * 2 : 8;
    void *bigger = new_cap <= SIZE_MAX / elem ? realloc(*items, new_cap * elem) : NULL;
    if (!bigger) return cr_fail(CR_ENOMEM, "safetensors writer: out of memory");
    *items = bigger;
    *cap = new_cap;
    return CR_OK;
}

/* FNV-1a hash of a NUL-terminated name. */
static size_t hash_name(const char *s)
{
    uint64_t h = 14695981039346656037u;
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) h = (h ^ *c) * 1099511628211u;
    return (size_t)h;
}

/* The slot that holds name, or the empty slot where it would go (linear probing). */
static size_t *find_slot(const cr_st_writer *w, const char *name)
{
    size_t mask = w->slot_cap - 1, i = hash_name(name) & mask;
    while (w->slots[i] && strcmp(w->tensors[w->slots[i] - 1].name, name) != 0) i = (i + 1) & mask;
    return &w->slots[i];
}

/* Keeps the hash table at least twice as large as the tensor count plus one. */
static cr_status grow_slots(cr_st_writer *w)
{
    if (2 * (w->count + 1) <= w->slot_cap) return CR_OK;
    size_t cap = w->slot_cap ? w->slot_cap * 2 : 16;
    size_t *slots = cap <= SIZE_MAX / sizeof *slots ? calloc(cap, sizeof *slots) : NULL;
    if (!slots) return cr_fail(CR_ENOMEM, "safetensors writer: out of memory");
    free(w->slots);
    w->slots = slots;
    w->slot_cap = cap;
    for (size_t i = 0; i < w->count; i++) *find_slot(w, w->tensors[i].name) = i + 1;
    return CR_OK;
}

/* Adds a copy of numel elements of dtype dt at data under name (rank 0..4). */
static cr_status add_tensor(cr_st_writer *w, const char *name, cr_dtype dt, int ndim,
                            const int64_t *shape, size_t numel, const void *data)
{
    cr_status st = check_writer_string(name, "tensor name", 0);
    if (st) return st;
    if (strcmp(name, ST_META_KEY) == 0)
        return cr_fail(CR_EINVAL, "safetensors writer: '%s' is reserved, not a tensor name", name);
    if ((st = grow_slots(w))) return st;
    size_t *slot = find_slot(w, name);
    if (*slot) return cr_fail(CR_EINVAL, "safetensors writer: duplicate tensor name '%s'", name);
    size_t bytes = numel * cr_dtype_size(dt);  /* the source is allocated, so no overflow */
    if (w->data_len > SIZE_MAX - bytes)
        return cr_fail(CR_EOVERFLOW, "safetensors writer: data section too large at '%s'", name);
    if ((st = grow_array((void **)&w->tensors, w->count, &w->cap, sizeof *w->tensors))) return st;
    wr_tensor *d = &w->tensors[w->count];
    memset(d, 0, sizeof *d);
    d->name = dup_str(name);
    d->data = cr_aligned_alloc(bytes);
    if (!d->name || !d->data) {
        free(d->name);
        cr_aligned_free(d->data);
        return cr_fail(CR_ENOMEM, "safetensors writer: out of memory for tensor '%s'", name);
    }
    d->dtype = dt;
    d->ndim = ndim;
    for (int i = 0; i < CR_MAX_DIMS; i++) d->shape[i] = i < ndim ? shape[i] : 1;
    d->numel = numel;
    if (bytes) memcpy(d->data, data, bytes);
    w->data_len += bytes;
    w->count++;
    *slot = w->count;
    return CR_OK;
}

cr_status cr_st_writer_add(cr_st_writer *w, const char *name, const cr_tensor *t)
{
    if (!t || t->ndim < 1 || t->ndim > CR_MAX_DIMS || (!t->data && t->numel))
        return cr_fail(CR_EINVAL, "safetensors writer: tensor '%s' is not allocated (rank %d)",
                       name ? name : "(null)", t ? t->ndim : 0);
    return add_tensor(w, name, CR_DT_F32, t->ndim, t->shape, t->numel, t->data);
}

cr_status cr_st_writer_add_typed(cr_st_writer *w, const char *name, const cr_dtensor *t)
{
    if (!t || cr_dtype_size(t->dtype) == 0 || t->ndim < 0 || t->ndim > CR_MAX_DIMS ||
        (!t->data && t->numel))
        return cr_fail(CR_EINVAL, "safetensors writer: typed tensor '%s' is not allocated",
                       name ? name : "(null)");
    return add_tensor(w, name, t->dtype, t->ndim, t->shape, t->numel, t->data);
}

cr_status cr_st_writer_meta(cr_st_writer *w, const char *key, const char *value)
{
    cr_status st = check_writer_string(key, "metadata key", 0);
    if (st || (st = check_writer_string(value, "metadata value", 1))) return st;
    for (size_t i = 0; i < w->meta_count; i++)
        if (strcmp(w->meta[i].key, key) == 0)
            return cr_fail(CR_EINVAL, "safetensors writer: duplicate metadata key '%s'", key);
    if ((st = grow_array((void **)&w->meta, w->meta_count, &w->meta_cap, sizeof *w->meta))) return st;
    st_meta *m = &w->meta[w->meta_count];
    m->key = dup_str(key);
    m->value = dup_str(value);
    if (!m->key || !m->value) {
        free(m->key);
        free(m->value);
        return cr_fail(CR_ENOMEM, "safetensors writer: out of memory for metadata '%s'", key);
    }
    w->meta_count++;
    return CR_OK;
}

/* Builds the JSON header (tensors in insertion order, contiguous offsets), space-padded
 * so that its length is a multiple of 8; *data_len gets the data section size. */
static cr_status build_header(const cr_st_writer *w, strbuf *b, size_t *data_len)
{
    size_t offset = 0;
    sb_puts(b, "{");
    if (w->meta_count) {
        sb_puts(b, "\"" ST_META_KEY "\":{");
        for (size_t i = 0; i < w->meta_count; i++) {
            if (i) sb_puts(b, ",");
            sb_put_json_string(b, w->meta[i].key);
            sb_puts(b, ":");
            sb_put_json_string(b, w->meta[i].value);
        }
        sb_puts(b, "}");
    }
    for (size_t i = 0; i < w->count; i++) {
        const wr_tensor *t = &w->tensors[i];
        if (i || w->meta_count) sb_puts(b, ",");
        sb_put_json_string(b, t->name);
        sb_puts(b, ":{\"dtype\":\"");
        sb_puts(b, cr_dtype_name(t->dtype));
        sb_puts(b, "\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            if (d) sb_puts(b, ",");
            sb_putu(b, (unsigned long long)t->shape[d]);
        }
        sb_puts(b, "],\"data_offsets\":[");
        sb_putu(b, offset);
        sb_puts(b, ",");
        offset += t->numel * cr_dtype_size(t->dtype);  /* bounded by w->data_len */
        sb_putu(b, offset);
        sb_puts(b, "]}");
    }
    sb_puts(b, "}");
    while (!b->failed && b->len % 8) sb_puts(b, " ");
    if (b->failed) return cr_fail(CR_ENOMEM, "safetensors writer: out of memory for the header");
    *data_len = offset;
    return CR_OK;
}

/* Writes the length prefix, the header and every tensor's data (little-endian) to fp;
 * 0 on success. */
static int write_contents(FILE *fp, const cr_st_writer *w, const strbuf *header)
{
    unsigned char prefix[8];
    uint64_t n = header->len;
    for (int i = 0; i < 8; i++) prefix[i] = (unsigned char)(n >> (8 * i));
    if (fwrite(prefix, 1, 8, fp) != 8 || fwrite(header->s, 1, header->len, fp) != header->len)
        return -1;
    unsigned char chunk[4096];  /* a multiple of every element size */
    for (size_t i = 0; i < w->count; i++) {
        const wr_tensor *t = &w->tensors[i];
        const size_t elem = cr_dtype_size(t->dtype), per_chunk = sizeof chunk / elem;
        const unsigned char *src = t->data;
        for (size_t j = 0; j < t->numel; j += per_chunk) {
            size_t k = t->numel - j < per_chunk ? t->numel - j : per_chunk;
            copy_le(chunk, src + j * elem, k, elem);
            if (fwrite(chunk, elem, k, fp) != k) return -1;
        }
    }
    return 0;
}

/* Writes the file through atomic_file.h (a unique temporary file renamed to path,
 * or path itself when it is a device or FIFO); fails with CR_EIO on error, leaving
 * path as it was. */
static cr_status write_atomically(const cr_st_writer *w, const strbuf *header, const char *path)
{
    cr_afile *af = NULL;
    cr_status st = cr_afile_open(&af, path, NULL);
    if (st) return st;
    if (write_contents(cr_afile_stream(af), w, header) != 0) {
        st = cr_fail(CR_EIO, "%s: write failed: %s", path, strerror(errno));
        cr_afile_abort(af);
        return st;
    }
    return cr_afile_commit(af);
}

cr_status cr_st_writer_save(cr_st_writer *w, const char *path)
{
    strbuf header = {0};
    size_t data_len;
    cr_status st = build_header(w, &header, &data_len);
    if (!st) st = write_atomically(w, &header, path);
    free(header.s);
    return st;
}
