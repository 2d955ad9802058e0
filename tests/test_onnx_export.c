/* test_onnx_export.c — suite ch08: cr_onnx_export's file, read back by a small protobuf
 * decoder written here from the wire-format rules (not from the exporter's code), and
 * the exporter's refusals.
 *
 * Checked on the every-kind model (test_onnx_models.h): the ModelProto's IR version and
 * opset, the graph's input and output shapes (the output's = our forward's), that every
 * state-dict tensor is an initializer of the same name, shape and bytes, that every
 * node input is defined before use, the node sequence, and the attributes of the nodes
 * that carry the module options (padding per side and mode, stride, dilation, groups,
 * epsilon, Resize's coordinate modes). Refused: an unknown module kind, a module whose
 * input does not fit, a reserved name, a model whose input channels are unknown, a
 * directory as the path; a refused export leaves an existing file unchanged. */
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "onnx_export.h"
#include "test_onnx_models.h"

/* ---- a protobuf decoder ------------------------------------------------------------------ */

typedef struct {
    const uint8_t *p, *end;
} rd;

/* One field: number, wire type, the varint / fixed32 value or the length-delimited bytes. */
typedef struct {
    int field, wire;
    uint64_t v;
    rd sub;
} fld;

/* Reads a varint; fails the test on a truncated one. */
static uint64_t rd_varint(rd *r)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->p >= r->end) fail_msg("truncated varint");
        const uint8_t b = *r->p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) return v;
    }
    fail_msg("varint longer than 10 bytes");
    return 0;
}

/* The next field of r into f; 0 at the end of r. Only wire types 0, 2 and 5 occur. */
static int rd_next(rd *r, fld *f)
{
    if (r->p >= r->end) return 0;
    const uint64_t key = rd_varint(r);
    f->field = (int)(key >> 3);
    f->wire = (int)(key & 7);
    if (f->wire == 0) {
        f->v = rd_varint(r);
    } else if (f->wire == 2) {
        const uint64_t len = rd_varint(r);
        if (len > (uint64_t)(r->end - r->p)) fail_msg("field %d: length %" PRIu64 " past the end", f->field, len);
        f->sub = (rd){r->p, r->p + len};
        r->p += len;
    } else if (f->wire == 5) {
        if (r->end - r->p < 4) fail_msg("truncated fixed32");
        f->v = (uint64_t)r->p[0] | (uint64_t)r->p[1] << 8 | (uint64_t)r->p[2] << 16 | (uint64_t)r->p[3] << 24;
        r->p += 4;
    } else {
        fail_msg("field %d: unexpected wire type %d", f->field, f->wire);
    }
    return 1;
}

/* Copies a length-delimited field into a NUL-terminated string of at most len - 1. */
static void rd_str(const fld *f, char *buf, size_t len)
{
    const size_t n = (size_t)(f->sub.end - f->sub.p);
    if (f->wire != 2 || n >= len) fail_msg("field %d is not a string of < %zu bytes", f->field, len);
    memcpy(buf, f->sub.p, n);
    buf[n] = 0;
}

/* ---- the decoded model -------------------------------------------------------------------- */

#define MAXN 64
#define MAXS 96

typedef struct {
    char name[MAXS];
    int type;
    int64_t i, ints[16];
    int nints;
    float f;
    char s[MAXS];
} attr;

typedef struct {
    char op[32], name[MAXS], in[6][MAXS], out[MAXS];
    int nin;
    attr a[8];
    int na;
} node;

typedef struct {
    char name[MAXS];
    int64_t dims[4];
    int ndim, dtype;
    rd raw;
} init;

typedef struct {
    uint64_t ir, opset;
    char opset_domain[16];
    node nodes[MAXN];
    int nn;
    init inits[MAXN];
    int ni;
    char in_name[MAXS], out_name[MAXS];
    int64_t in_dims[4], out_dims[4];
    int in_nd, out_nd;
} model;

/* AttributeProto: name 1, f 2, i 3, s 4, ints 8, type 20. */
static void parse_attr(rd r, attr *a)
{
    fld f;
    memset(a, 0, sizeof *a);
    while (rd_next(&r, &f)) {
        if (f.field == 1) rd_str(&f, a->name, sizeof a->name);
        else if (f.field == 20) a->type = (int)f.v;
        else if (f.field == 3) a->i = (int64_t)f.v;
        else if (f.field == 2) { uint32_t u = (uint32_t)f.v; memcpy(&a->f, &u, 4); }
        else if (f.field == 4) rd_str(&f, a->s, sizeof a->s);
        else if (f.field == 8 && a->nints < 16) a->ints[a->nints++] = (int64_t)f.v;
        else fail_msg("attribute: unexpected field %d", f.field);
    }
}

/* NodeProto: input 1, output 2, name 3, op_type 4, attribute 5. */
static void parse_node(rd r, node *n)
{
    fld f;
    memset(n, 0, sizeof *n);
    while (rd_next(&r, &f)) {
        if (f.field == 1 && n->nin < 6) rd_str(&f, n->in[n->nin++], MAXS);
        else if (f.field == 2) rd_str(&f, n->out, MAXS);
        else if (f.field == 3) rd_str(&f, n->name, MAXS);
        else if (f.field == 4) rd_str(&f, n->op, sizeof n->op);
        else if (f.field == 5 && n->na < 8) parse_attr(f.sub, &n->a[n->na++]);
        else fail_msg("node: unexpected field %d", f.field);
    }
}

/* TensorProto: dims 1, data_type 2, name 8, raw_data 9. */
static void parse_init(rd r, init *t)
{
    fld f;
    memset(t, 0, sizeof *t);
    while (rd_next(&r, &f)) {
        if (f.field == 1 && t->ndim < 4) t->dims[t->ndim++] = (int64_t)f.v;
        else if (f.field == 2) t->dtype = (int)f.v;
        else if (f.field == 8) rd_str(&f, t->name, MAXS);
        else if (f.field == 9) t->raw = f.sub;
        else fail_msg("initializer: unexpected field %d", f.field);
    }
}

/* ValueInfoProto name 1, type 2 -> TypeProto.tensor_type 1 -> shape 2 -> dim 1 ->
 * dim_value 1 (elem_type 1 must be FLOAT). */
static void parse_value_info(rd r, char *name, int64_t dims[4], int *nd)
{
    fld f, g, h, k, l;
    *nd = 0;
    while (rd_next(&r, &f)) {
        if (f.field == 1) rd_str(&f, name, MAXS);
        if (f.field != 2) continue;
        while (rd_next(&f.sub, &g)) {          /* TypeProto */
            assert_int_equal(g.field, 1);
            while (rd_next(&g.sub, &h)) {      /* TypeProto.Tensor */
                if (h.field == 1) assert_int_equal(h.v, 1);
                if (h.field != 2) continue;
                while (rd_next(&h.sub, &k))    /* TensorShapeProto.dim */
                    while (rd_next(&k.sub, &l))
                        if (l.field == 1 && *nd < 4) dims[(*nd)++] = (int64_t)l.v;
            }
        }
    }
}

/* Reads the file at path into *buf (freed by the caller) and decodes it into m. */
static void parse_model(const char *path, uint8_t **buf, model *m)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) fail_msg("cannot open %s", path);
    fseek(fp, 0, SEEK_END);
    const long len = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    *buf = malloc((size_t)len);
    if (!*buf || fread(*buf, 1, (size_t)len, fp) != (size_t)len) fail_msg("cannot read %s", path);
    fclose(fp);
    memset(m, 0, sizeof *m);
    rd r = {*buf, *buf + len};
    fld f, g;
    int graphs = 0;
    while (rd_next(&r, &f)) {
        if (f.field == 1) m->ir = f.v;                       /* ModelProto.ir_version */
        if (f.field == 8)                                    /* ModelProto.opset_import */
            while (rd_next(&f.sub, &g)) {
                if (g.field == 1) rd_str(&g, m->opset_domain, sizeof m->opset_domain);
                if (g.field == 2) m->opset = g.v;
            }
        if (f.field != 7) continue;                          /* ModelProto.graph */
        graphs++;
        while (rd_next(&f.sub, &g)) {
            if (g.field == 1) {
                if (m->nn == MAXN) fail_msg("more than %d nodes", MAXN);
                parse_node(g.sub, &m->nodes[m->nn++]);
            } else if (g.field == 5) {
                if (m->ni == MAXN) fail_msg("more than %d initializers", MAXN);
                parse_init(g.sub, &m->inits[m->ni++]);
            } else if (g.field == 11) {
                parse_value_info(g.sub, m->in_name, m->in_dims, &m->in_nd);
            } else if (g.field == 12) {
                parse_value_info(g.sub, m->out_name, m->out_dims, &m->out_nd);
            } else if (g.field != 2) {
                fail_msg("graph: unexpected field %d", g.field);
            }
        }
    }
    assert_int_equal(graphs, 1);
}

static const node *find_node(const model *m, const char *name)
{
    for (int i = 0; i < m->nn; i++)
        if (strcmp(m->nodes[i].name, name) == 0) return &m->nodes[i];
    fail_msg("no node named '%s'", name);
    return NULL;
}

static const attr *find_attr(const node *n, const char *name)
{
    for (int i = 0; i < n->na; i++)
        if (strcmp(n->a[i].name, name) == 0) return &n->a[i];
    fail_msg("node '%s' has no attribute '%s'", n->name, name);
    return NULL;
}

/* Fails unless node's INTS attribute equals v[0..n-1]. */
static void expect_ints(const model *m, const char *node_name, const char *a, const int64_t *v, int n)
{
    const attr *at = find_attr(find_node(m, node_name), a);
    assert_int_equal(at->type, 7);
    assert_int_equal(at->nints, n);
    for (int k = 0; k < n; k++)
        if (at->ints[k] != v[k])
            fail_msg("%s.%s[%d] = %lld, expected %lld", node_name, a, k, (long long)at->ints[k],
                     (long long)v[k]);
}

static void expect_str(const model *m, const char *node_name, const char *a, const char *s)
{
    const attr *at = find_attr(find_node(m, node_name), a);
    assert_int_equal(at->type, 3);
    assert_string_equal(at->s, s);
}

/* The int64 values of initializer name. */
static void init_i64(const model *m, const char *name, int64_t *v, int n)
{
    for (int i = 0; i < m->ni; i++) {
        const init *t = &m->inits[i];
        if (strcmp(t->name, name) != 0) continue;
        assert_int_equal(t->dtype, 7);
        assert_int_equal(t->raw.end - t->raw.p, 8 * n);
        for (int k = 0; k < n; k++) {
            uint64_t u = 0;
            for (int b = 0; b < 8; b++) u |= (uint64_t)t->raw.p[8 * k + b] << (8 * b);
            v[k] = (int64_t)u;
        }
        return;
    }
    fail_msg("no initializer '%s'", name);
}

/* ---- tests ---------------------------------------------------------------------------------- */

/* A temporary file name in a fresh directory (dir receives the directory). */
static void tmp_paths(char *dir, size_t dlen, char *file, size_t flen, const char *name)
{
    const char *t = getenv("TMPDIR");
    snprintf(dir, dlen, "%s/cr_onnx_XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(dir)) fail_msg("cannot create a temporary directory");
    snprintf(file, flen, "%s/%s", dir, name);
}

/* The every-kind model's file, decoded, against the model and its forward. */
static void onnx_export__every_kind_decodes(void **state)
{
    (void)state;
    const uint64_t seed = cr_seed_from_env();
    printf("# seed %" PRIu64 " (CR_SEED replays)\n", seed);
    cr_rng r;
    cr_rng_seed(&r, seed);
    cr_model m;
    cr_model_init(&m);
    build_every_kind(&m);
    randomize_state(&m, &r);
    char dir[256], path[300];
    tmp_paths(dir, sizeof dir, path, sizeof path, "every_kind.onnx");
    assert_cr_ok(cr_onnx_export(&m, EK_N, EK_H, EK_W, path));
    cr_tensor x = {0};
    const cr_tensor *y = NULL;
    assert_cr_ok(cr_tensor_alloc4(&x, EK_N, EK_C, EK_H, EK_W));
    cr_tensor_fill_uniform(&x, &r, -1, 1);
    cr_model_train(&m, false);
    assert_cr_ok(cr_model_forward(&m, &x, &y));

    uint8_t *buf = NULL;
    model *d = calloc(1, sizeof *d);
    assert_non_null(d);
    parse_model(path, &buf, d);
    assert_int_equal(d->ir, CR_ONNX_IR_VERSION);
    assert_true(d->opset >= 13);
    assert_string_equal(d->opset_domain, "");
    assert_string_equal(d->in_name, "input");
    assert_string_equal(d->out_name, "output");
    const int64_t in_dims[4] = {EK_N, EK_C, EK_H, EK_W};
    assert_int_equal(d->in_nd, 4);
    assert_int_equal(d->out_nd, 4);
    for (int k = 0; k < 4; k++) {
        assert_int_equal(d->in_dims[k], in_dims[k]);
        assert_int_equal(d->out_dims[k], y->shape[k]);
    }

    /* every state-dict tensor, same name, shape and little-endian bytes */
    cr_tensor_list l = {0};
    assert_cr_ok(cr_model_state_list(&m, &l));
    for (int i = 0; i < l.n; i++) {
        const init *t = NULL;
        for (int j = 0; j < d->ni && !t; j++)
            if (strcmp(d->inits[j].name, l.names[i]) == 0) t = &d->inits[j];
        if (!t) fail_msg("state-dict tensor '%s' is no initializer", l.names[i]);
        const cr_tensor *v = l.tensors[i];
        assert_int_equal(t->dtype, 1);
        assert_int_equal(t->ndim, v->ndim);
        for (int k = 0; k < v->ndim; k++) assert_int_equal(t->dims[k], v->shape[k]);
        assert_int_equal(t->raw.end - t->raw.p, 4 * (ptrdiff_t)v->numel);
        for (size_t k = 0; k < v->numel; k++) {
            const uint8_t *b = t->raw.p + 4 * k;
            const uint32_t u = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
            float f;
            memcpy(&f, &u, 4);
            if (f != v->data[k]) fail_msg("'%s'[%zu] = %g in the file, %g in the model", l.names[i], k, f, v->data[k]);
        }
    }
    cr_tensor_list_free(&l);

    /* every node input is the graph input, an initializer, an earlier output, or "" */
    for (int i = 0; i < d->nn; i++)
        for (int k = 0; k < d->nodes[i].nin; k++) {
            const char *s = d->nodes[i].in[k];
            bool ok = !*s || strcmp(s, "input") == 0;
            for (int j = 0; j < d->ni && !ok; j++) ok = strcmp(d->inits[j].name, s) == 0;
            for (int j = 0; j < i && !ok; j++) ok = strcmp(d->nodes[j].out, s) == 0;
            if (!ok) fail_msg("node '%s' reads '%s', defined nowhere before it", d->nodes[i].name, s);
        }
    assert_string_equal(d->nodes[d->nn - 1].out, "output");

    /* the node sequence: explicit pads, the circular wrap, GroupNorm's decomposition */
    static const char *const ops[] = {
        "Pad", "Conv", "BatchNormalization", "Relu", "Slice", "Slice", "Concat", "Slice",
        "Slice", "Concat", "Conv", "Reshape", "InstanceNormalization", "Reshape", "Unsqueeze",
        "Unsqueeze", "Mul", "Add", "Pad", "Conv", "MaxPool", "Conv", "Resize", "Add",
        "GlobalAveragePool", "Resize", "Add", "Resize", "Resize", "Identity", "Conv"};
    assert_int_equal(d->nn, (int)(sizeof ops / sizeof *ops));
    for (int i = 0; i < d->nn; i++)
        if (strcmp(d->nodes[i].op, ops[i]) != 0)
            fail_msg("node %d ('%s') is %s, expected %s", i, d->nodes[i].name, d->nodes[i].op, ops[i]);

    /* options: ONNX orders pads (top, left, bottom, right); Pad's as N, C, H, W begins, ends */
    int64_t pads8[8];
    init_i64(d, "c_reflect/pads", pads8, 8);
    const int64_t refl8[8] = {0, 0, 1, 2, 0, 0, 2, 1}, zero4[4] = {0, 0, 0, 0};
    for (int k = 0; k < 8; k++) assert_int_equal(pads8[k], refl8[k]);
    expect_str(d, "c_reflect/pad", "mode", "reflect");
    expect_ints(d, "c_reflect", "pads", zero4, 4);
    init_i64(d, "c_replicate/pads", pads8, 8);
    const int64_t repl8[8] = {0, 0, 1, 1, 0, 0, 1, 0};
    for (int k = 0; k < 8; k++) assert_int_equal(pads8[k], repl8[k]);
    expect_str(d, "c_replicate/pad", "mode", "edge");
    assert_int_equal(find_attr(find_node(d, "c_replicate"), "group")->i, 8);
    const int64_t k32[2] = {3, 2};
    expect_ints(d, "c_replicate", "kernel_shape", k32, 2);
    const int64_t dil[2] = {2, 1}, str[2] = {1, 2}, zp[4] = {1, 1, 1, 1};
    expect_ints(d, "c_circular", "dilations", dil, 2);
    expect_ints(d, "c_circular", "strides", str, 2);
    expect_ints(d, "c_circular", "pads", zero4, 4);
    assert_int_equal(find_attr(find_node(d, "c_circular"), "group")->i, 2);
    assert_int_equal(find_node(d, "c_circular")->nin, 2);   /* no bias */
    expect_ints(d, "c_zeros", "pads", zp, 4);
    assert_int_equal(find_node(d, "c_zeros")->nin, 3);
    /* circular: the top 2 rows come from the bottom (slice H-2..H along axis 2) */
    int64_t v;
    init_i64(d, "c_circular/wrap2_before/starts", &v, 1);
    assert_int_equal(v, 13 - 2);   /* c_reflect's output height 13, minus the 2 rows */
    init_i64(d, "c_circular/wrap2_before/axes", &v, 1);
    assert_int_equal(v, 2);
    const int64_t pool_pads[4] = {1, 1, 1, 1};
    expect_ints(d, "pool", "pads", pool_pads, 4);
    assert_true(fabsf(find_attr(find_node(d, "bn"), "epsilon")->f - 1e-5f) < 1e-12f);
    assert_true(fabsf(find_attr(find_node(d, "gn/normalize"), "epsilon")->f - 1e-5f) < 1e-12f);
    expect_str(d, "up_nearest", "coordinate_transformation_mode", "asymmetric");
    expect_str(d, "up_nearest", "nearest_mode", "floor");
    expect_str(d, "up_corners", "coordinate_transformation_mode", "align_corners");
    expect_str(d, "up_corners", "mode", "linear");
    expect_str(d, "up_half", "coordinate_transformation_mode", "half_pixel");
    /* scale 1.5 on 13 rows: sizes would use 19/13, PyTorch uses 1/1.5: scales */
    assert_string_equal(find_node(d, "up_half")->in[2], "up_half/scales");

    free(buf);
    free(d);
    unlink(path);
    rmdir(dir);
    cr_tensor_free(&x);
    cr_model_free(&m);
}

/* Fails unless the last error names the module and says what (a fragment). */
static void expect_error(const char *module, const char *fragment)
{
    const char *e = cr_last_error();
    if (!strstr(e, module) || !strstr(e, fragment))
        fail_msg("error '%s' should name '%s' and say '%s'", e, module, fragment);
}

/* Refusals leave no file, and an existing file as it was. */
static void onnx_export__refusals(void **state)
{
    (void)state;
    cr_model m;
    cr_model_init(&m);
    build_every_kind(&m);
    assert_cr_ok(cr_model_init_params(&m, 3));
    char dir[256], path[300];
    tmp_paths(dir, sizeof dir, path, sizeof path, "refused.onnx");
    struct stat st;

    /* input too small for c_reflect's reflect padding of 2 columns (needs width > 2) */
    assert_cr_fails(cr_onnx_export(&m, 1, 12, 2, path), CR_EINVAL);
    expect_error("'c_reflect' (conv)", "reflect");
    assert_int_equal(stat(path, &st), -1);
    /* wrong channels: c_reflect expects 3 */
    assert_cr_fails(cr_onnx_export_nchw(&m, 1, 5, EK_H, EK_W, path), CR_EINVAL);
    expect_error("'c_reflect' (conv)", "5 channels");

    /* an existing file survives a refused export */
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("previous", f);
    fclose(f);
    const cr_module_kind saved = m.mods[3].kind;
    m.mods[3].kind = (cr_module_kind)42;
    assert_cr_fails(cr_onnx_export(&m, EK_N, EK_H, EK_W, path), CR_EINVAL);
    expect_error("'c_circular'", "not one of chapter 4's module kinds");
    m.mods[3].kind = saved;
    char back[32] = "";
    f = fopen(path, "r");
    assert_non_null(f);
    assert_non_null(fgets(back, sizeof back, f));
    fclose(f);
    assert_string_equal(back, "previous");
    unlink(path);

    /* a directory as the path */
    assert_cr_fails(cr_onnx_export(&m, EK_N, EK_H, EK_W, dir), CR_EINVAL);
    assert_int_equal(rmdir(dir), 0);   /* empty: nothing was left in it */
    cr_model_free(&m);

    /* a model that starts with a ReLU: channels unknown, then given */
    cr_model_init(&m);
    assert_true(cr_model_add_relu(&m, "relu", CR_MODEL_INPUT) >= 0);
    assert_true(cr_model_add_avgpool(&m, "output", CR_PREV) >= 0);
    tmp_paths(dir, sizeof dir, path, sizeof path, "relu.onnx");
    assert_cr_fails(cr_onnx_export(&m, 1, 4, 4, path), CR_EINVAL);
    expect_error("onnx export", "channel count is unknown");
    assert_cr_fails(cr_onnx_export_nchw(&m, 1, 2, 4, 4, path), CR_EINVAL);
    expect_error("'output'", "reserved");
    snprintf(m.mods[1].name, sizeof m.mods[1].name, "gap");
    assert_cr_ok(cr_onnx_export_nchw(&m, 1, 2, 4, 4, path));
    uint8_t *buf = NULL;
    model *d = calloc(1, sizeof *d);
    assert_non_null(d);
    parse_model(path, &buf, d);
    const int64_t out[4] = {1, 2, 1, 1};
    for (int k = 0; k < 4; k++) assert_int_equal(d->out_dims[k], out[k]);
    assert_int_equal(d->nn, 2);
    assert_int_equal(d->ni, 0);
    free(buf);
    free(d);
    unlink(path);
    rmdir(dir);
    cr_model_free(&m);
}

/* Up-sampling that ONNX Runtime's Resize would compute otherwise is refused, named:
 * legacy nearest 14 -> 2 (ours reads rows 0, 7; floor(1 / (2/14f)) = 6), and bilinear
 * scale 1.125 on 2 x 2 (the size stays 2 x 2: ONNX Runtime copies, PyTorch interpolates). */
static void onnx_export__inexact_resize_refused(void **state)
{
    (void)state;
    const cr_upsample_params cases[2] = {
        {.mode = CR_UPSAMPLE_NEAREST, .out_h = 2, .out_w = 2},
        {.mode = CR_UPSAMPLE_BILINEAR, .scale_h = 1.125, .scale_w = 1.125},
    };
    const int64_t in[2] = {14, 2};
    char dir[256], path[300];
    tmp_paths(dir, sizeof dir, path, sizeof path, "resize.onnx");
    for (int k = 0; k < 2; k++) {
        cr_model m;
        cr_model_init(&m);
        const cr_conv_params p = cr_conv_params_default(2, 2, 1);
        assert_true(cr_model_add_conv(&m, "conv", CR_MODEL_INPUT, &p) >= 0);
        assert_true(cr_model_add_upsample(&m, "resize_me", CR_PREV, &cases[k], -1) >= 0);
        assert_cr_fails(cr_onnx_export(&m, 1, in[k], in[k], path), CR_EINVAL);
        expect_error("'resize_me' (upsample)", "no exact ONNX Resize");
        struct stat st;
        assert_int_equal(stat(path, &st), -1);
        cr_model_free(&m);
    }
    assert_int_equal(rmdir(dir), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(onnx_export__every_kind_decodes),
        cmocka_unit_test(onnx_export__refusals),
        cmocka_unit_test(onnx_export__inexact_resize_refused),
    };
    return cr_run_tests("onnx_export", tests);
}
