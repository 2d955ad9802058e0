/* onnx_export.c — chapter 8: a chapter-4 module list as an ONNX model (see onnx_export.h).
 *
 * Three parts: a protobuf wire-format encoder (pb_*), the graph's pieces (initializers,
 * nodes, attributes, value infos) as ONNX messages, and one emitter per module kind.
 * Field numbers are those of the ONNX specification's onnx.proto; each use names the
 * message and field it writes. */
#include "onnx_export.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atomic_file.h"

/* ---- protobuf wire format ------------------------------------------------------------ */

/* Wire types: 0 varint, 2 length-delimited (strings, bytes, nested messages), 5 32-bit. */
enum { PB_VARINT = 0, PB_LEN = 2, PB_FIXED32 = 5 };

/* A growable byte buffer; oom sticks once an allocation fails (checked at the end). */
typedef struct {
    uint8_t *p;
    size_t n, cap;
    bool oom;
} pb_buf;

/* Appends len bytes of src to b. */
static void pb_put(pb_buf *b, const void *src, size_t len)
{
    if (b->oom) return;
    if (b->n + len > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + len) cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    if (len) memcpy(b->p + b->n, src, len);
    b->n += len;
}

static void pb_free(pb_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* v as a base-128 varint (7 bits a byte, low first, high bit = more follows). */
static void pb_varint(pb_buf *b, uint64_t v)
{
    uint8_t tmp[10];
    size_t k = 0;
    do {
        tmp[k] = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v) tmp[k] |= 0x80;
        k++;
    } while (v);
    pb_put(b, tmp, k);
}

/* Bytes the varint of v takes. */
static size_t pb_varint_len(uint64_t v)
{
    size_t k = 1;
    while (v >>= 7) k++;
    return k;
}

/* A field's key: (field number << 3) | wire type. */
static void pb_key(pb_buf *b, int field, int wire)
{
    pb_varint(b, ((uint64_t)field << 3) | (uint64_t)wire);
}

/* An int32/int64/enum field (negative values as their 64-bit two's complement). */
static void pb_int(pb_buf *b, int field, int64_t v)
{
    pb_key(b, field, PB_VARINT);
    pb_varint(b, (uint64_t)v);
}

/* A length-delimited field: bytes, a string or an encoded nested message. */
static void pb_bytes(pb_buf *b, int field, const void *data, size_t len)
{
    pb_key(b, field, PB_LEN);
    pb_varint(b, len);
    pb_put(b, data, len);
}

static void pb_str(pb_buf *b, int field, const char *s)
{
    pb_bytes(b, field, s, strlen(s));
}

/* A nested message (sub's bytes) as field `field`; frees sub. */
static void pb_msg(pb_buf *b, int field, pb_buf *sub)
{
    if (sub->oom) b->oom = true;
    pb_bytes(b, field, sub->p, sub->n);
    pb_free(sub);
}

/* x's 4 bytes, little-endian, whatever the host's byte order. */
static void pb_le32(pb_buf *b, float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    const uint8_t le[4] = {(uint8_t)u, (uint8_t)(u >> 8), (uint8_t)(u >> 16), (uint8_t)(u >> 24)};
    pb_put(b, le, 4);
}

/* v's 8 bytes, little-endian. */
static void pb_le64(pb_buf *b, int64_t v)
{
    const uint64_t u = (uint64_t)v;
    uint8_t le[8];
    for (int k = 0; k < 8; k++) le[k] = (uint8_t)(u >> (8 * k));
    pb_put(b, le, 8);
}

/* A float field (wire type 5: 4 bytes little-endian). */
static void pb_float(pb_buf *b, int field, float x)
{
    pb_key(b, field, PB_FIXED32);
    pb_le32(b, x);
}

/* ---- ONNX messages ---------------------------------------------------------------------- */

enum { ONNX_FLOAT = 1, ONNX_INT64 = 7 };                  /* TensorProto.DataType */
enum { ATTR_FLOAT = 1, ATTR_INT = 2, ATTR_STRING = 3, ATTR_INTS = 7 };  /* AttributeType */

/* What an export builds: the graph's nodes and initializers (each an encoded repeated
 * field of GraphProto) and every module's output shape. */
typedef struct {
    const cr_model *m;
    int64_t in[4];          /* the graph input's N, C, H, W */
    int64_t (*shape)[4];    /* shape[i]: module i's output */
    pb_buf nodes, inits;
} onnx_ex;

/* Appends an initializer: TensorProto {dims = 1 (repeated int64), data_type = 2,
 * name = 8, raw_data = 9 (little-endian)} as GraphProto.initializer = 5. Exactly one of
 * f (count floats) and i64 (count int64s) is given. */
static void add_init(onnx_ex *e, const char *name, int ndim, const int64_t *dims,
                     const float *f, const int64_t *i64, size_t count)
{
    pb_buf hdr = {0};
    for (int d = 0; d < ndim; d++) pb_int(&hdr, 1, dims[d]);      /* TensorProto.dims */
    pb_int(&hdr, 2, f ? ONNX_FLOAT : ONNX_INT64);                   /* TensorProto.data_type */
    pb_str(&hdr, 8, name);                                           /* TensorProto.name */
    const size_t raw = count * (f ? 4 : 8);
    const size_t total = hdr.n + 1 + pb_varint_len(raw) + raw;       /* key of field 9: 1 byte */
    pb_key(&e->inits, 5, PB_LEN);                                    /* GraphProto.initializer */
    pb_varint(&e->inits, total);
    if (hdr.oom) e->inits.oom = true;
    pb_put(&e->inits, hdr.p, hdr.n);
    pb_free(&hdr);
    pb_key(&e->inits, 9, PB_LEN);                                    /* TensorProto.raw_data */
    pb_varint(&e->inits, raw);
    for (size_t k = 0; k < count; k++) {
        if (f) pb_le32(&e->inits, f[k]);
        else pb_le64(&e->inits, i64[k]);
    }
}

/* A model tensor (parameter or buffer) as a float initializer in its own shape. */
static void add_tensor_init(onnx_ex *e, const char *name, const cr_tensor *t)
{
    add_init(e, name, t->ndim, t->shape, t->data, NULL, t->numel);
}

/* A rank-1 int64 constant of n values. */
static void add_i64(onnx_ex *e, const char *name, const int64_t *v, int64_t n)
{
    add_init(e, name, 1, &n, NULL, v, (size_t)n);
}

/* A rank-1 float constant of n values. */
static void add_f32(onnx_ex *e, const char *name, const float *v, int64_t n)
{
    add_init(e, name, 1, &n, v, NULL, (size_t)n);
}

/* AttributeProto {name = 1, type = 20, and i = 3 | f = 2 | s = 4 | ints = 8}, appended
 * to attrs as NodeProto.attribute = 5. */
static void attr_begin(pb_buf *a, const char *name, int type)
{
    pb_str(a, 1, name);      /* AttributeProto.name */
    pb_int(a, 20, type);     /* AttributeProto.type */
}

static void attr_int(pb_buf *attrs, const char *name, int64_t v)
{
    pb_buf a = {0};
    attr_begin(&a, name, ATTR_INT);
    pb_int(&a, 3, v);        /* AttributeProto.i */
    pb_msg(attrs, 5, &a);
}

static void attr_float(pb_buf *attrs, const char *name, float v)
{
    pb_buf a = {0};
    attr_begin(&a, name, ATTR_FLOAT);
    pb_float(&a, 2, v);      /* AttributeProto.f */
    pb_msg(attrs, 5, &a);
}

static void attr_string(pb_buf *attrs, const char *name, const char *s)
{
    pb_buf a = {0};
    attr_begin(&a, name, ATTR_STRING);
    pb_str(&a, 4, s);        /* AttributeProto.s */
    pb_msg(attrs, 5, &a);
}

static void attr_ints(pb_buf *attrs, const char *name, const int64_t *v, int n)
{
    pb_buf a = {0};
    attr_begin(&a, name, ATTR_INTS);
    for (int k = 0; k < n; k++) pb_int(&a, 8, v[k]);   /* AttributeProto.ints */
    pb_msg(attrs, 5, &a);
}

/* Appends NodeProto {input = 1, output = 2, name = 3, op_type = 4, attribute = 5 (attrs,
 * already encoded; freed)} as GraphProto.node = 1. An input "" is an omitted optional. */
static void add_node(onnx_ex *e, const char *op, const char *name, const char *const *in,
                     int nin, const char *out, pb_buf *attrs)
{
    pb_buf n = {0};
    for (int k = 0; k < nin; k++) pb_str(&n, 1, in[k]);
    pb_str(&n, 2, out);
    pb_str(&n, 3, name);
    pb_str(&n, 4, op);
    if (attrs) {
        if (attrs->oom) n.oom = true;
        pb_put(&n, attrs->p, attrs->n);
        pb_free(attrs);
    }
    pb_msg(&e->nodes, 1, &n);
}

/* ValueInfoProto {name = 1, type = 2: TypeProto {tensor_type = 1: {elem_type = 1 (FLOAT),
 * shape = 2: TensorShapeProto {dim = 1: {dim_value = 1}}}}} as field `field` of g. */
static void add_value_info(pb_buf *g, int field, const char *name, const int64_t s[4])
{
    pb_buf shape = {0}, tensor = {0}, type = {0}, vi = {0};
    for (int k = 0; k < 4; k++) {
        pb_buf dim = {0};
        pb_int(&dim, 1, s[k]);          /* TensorShapeProto.Dimension.dim_value */
        pb_msg(&shape, 1, &dim);        /* TensorShapeProto.dim */
    }
    pb_int(&tensor, 1, ONNX_FLOAT);     /* TypeProto.Tensor.elem_type */
    pb_msg(&tensor, 2, &shape);         /* TypeProto.Tensor.shape */
    pb_msg(&type, 1, &tensor);          /* TypeProto.tensor_type */
    pb_str(&vi, 1, name);               /* ValueInfoProto.name */
    pb_msg(&vi, 2, &type);              /* ValueInfoProto.type */
    pb_msg(g, field, &vi);
}

/* ---- shapes ---------------------------------------------------------------------------- */

static const char *const kind_names[] = {"conv", "batchnorm", "groupnorm", "relu", "maxpool",
                                         "avgpool", "upsample", "add", "dropout"};

static const char *kind_name(cr_module_kind k)
{
    return (unsigned)k < sizeof kind_names / sizeof *kind_names ? kind_names[k] : "unknown";
}

/* Fails with status, naming the module before the last error's message. */
static cr_status fail_module(cr_status status, const cr_module *d)
{
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", cr_last_error());
    return cr_fail(status, "onnx export: module '%s' (%s): %s", d->name, kind_name(d->kind), msg);
}

/* The shape module (or input, CR_MODEL_INPUT) i produces. */
static const int64_t *shape_of(const onnx_ex *e, int i)
{
    return i == CR_MODEL_INPUT ? e->in : e->shape[i];
}

/* The upsample's parameters with its size taken from its `like` module when it has one
 * (as cr_model_forward does). */
static cr_upsample_params up_params(const onnx_ex *e, const cr_module *d)
{
    cr_upsample_params p = d->up;
    if (d->up_like >= 0) {
        p.out_h = e->shape[d->up_like][2];
        p.out_w = e->shape[d->up_like][3];
        p.scale_h = p.scale_w = 0;
    }
    return p;
}

/* Module d's output shape y from its input shape x (and in2's for add). */
static cr_status module_shape(const onnx_ex *e, const cr_module *d, const int64_t x[4],
                              int64_t y[4])
{
    memcpy(y, x, 4 * sizeof *y);
    switch (d->kind) {
    case CR_MOD_CONV: {
        cr_conv_shape cs;
        if (x[1] != d->conv.in_channels)
            return cr_fail(CR_EINVAL, "its input has %lld channels, it expects %lld",
                           (long long)x[1], (long long)d->conv.in_channels);
        cr_status s = cr_conv_shape_init(&cs, &d->conv, x[0], x[2], x[3]);
        if (s) return s;
        y[1] = d->conv.out_channels;
        y[2] = cs.h_out;
        y[3] = cs.w_out;
        return CR_OK;
    }
    case CR_MOD_BATCHNORM:
    case CR_MOD_GROUPNORM:
        if (x[1] != d->channels)
            return cr_fail(CR_EINVAL, "its input has %lld channels, it expects %lld",
                           (long long)x[1], (long long)d->channels);
        return CR_OK;
    case CR_MOD_RELU:
    case CR_MOD_DROPOUT:
        return CR_OK;
    case CR_MOD_MAXPOOL:
        return cr_maxpool2d_out_size(&d->pool, x[2], x[3], &y[2], &y[3]);
    case CR_MOD_AVGPOOL:
        y[2] = y[3] = 1;
        return CR_OK;
    case CR_MOD_UPSAMPLE: {
        const cr_upsample_params p = up_params(e, d);
        return cr_upsample_out_size(&p, x[2], x[3], &y[2], &y[3]);
    }
    case CR_MOD_ADD: {
        const int64_t *b = shape_of(e, d->in2);
        if (memcmp(x, b, 4 * sizeof *x) != 0)
            return cr_fail(CR_EINVAL, "adds a %lldx%lldx%lldx%lld tensor to a %lldx%lldx%lldx%lld one",
                           (long long)b[0], (long long)b[1], (long long)b[2], (long long)b[3],
                           (long long)x[0], (long long)x[1], (long long)x[2], (long long)x[3]);
        return CR_OK;
    }
    }
    return cr_fail(CR_EINVAL, "kind %d is not one of chapter 4's module kinds, which ONNX "
                   "export knows", (int)d->kind);
}

/* Every module's output shape for the input e->in, in order; the first module that does
 * not fit its input fails, named. */
static cr_status infer_shapes(onnx_ex *e)
{
    for (int i = 0; i < e->m->n; i++) {
        const cr_module *d = &e->m->mods[i];
        cr_status s = module_shape(e, d, shape_of(e, d->in), e->shape[i]);
        if (s) return fail_module(s, d);
    }
    return CR_OK;
}

/* ---- up-sampling: which Resize computes exactly what ours does ------------------------ */

/* The source index of output index d along an axis in -> out, as layers.c's legacy
 * 'nearest' computes it (scale: PyTorch's scale_factor, or 0). */
static int64_t nearest_ours(int64_t in, int64_t out, double scale, int64_t d)
{
    if (out == in) return d;
    if (out == 2 * in) return d >> 1;
    const float r = scale > 0 ? (float)(1.0 / scale) : (float)in / (float)out;
    const int64_t src = (int64_t)floorf((float)d * r);
    return src > in - 1 ? in - 1 : src;
}

/* The source index ONNX Runtime's Resize (nearest, asymmetric, floor) picks with the
 * float scale s: floor(d / s), clamped to the input. */
static int64_t nearest_ort(int64_t in, float s, int64_t d)
{
    int64_t src = (int64_t)floorf((float)d / s);
    return src < 0 ? 0 : src > in - 1 ? in - 1 : src;
}

/* True when Resize with float scale s picks our source index at every output index. */
static bool nearest_axis_exact(int64_t in, int64_t out, double scale, float s)
{
    for (int64_t d = 0; d < out; d++)
        if (nearest_ours(in, out, scale, d) != nearest_ort(in, s, d)) return false;
    return true;
}

/* True when Resize with scales computes the output size out from in (floor(in * s)). */
static bool scale_size_exact(int64_t in, int64_t out, double scale)
{
    const float s = (float)scale;
    return scale > 0 && (int64_t)floor((double)s * (double)in) == out &&
           (int64_t)(s * (float)in) == out;
}

/* Decides how Resize is told the output size: *use_scales false = sizes (the ratio is
 * out / in), true = scales (PyTorch's scale_factor). Fails when neither reproduces our
 * source coordinates. */
static cr_status resize_plan(const cr_upsample_params *p, const int64_t x[4], const int64_t y[4],
                             bool *use_scales)
{
    const int64_t H = x[2], W = x[3], Ho = y[2], Wo = y[3];
    bool sizes_ok, scales_ok = scale_size_exact(H, Ho, p->scale_h) &&
                               scale_size_exact(W, Wo, p->scale_w);
    if (p->mode == CR_UPSAMPLE_NEAREST) {
        sizes_ok = nearest_axis_exact(H, Ho, p->scale_h, (float)Ho / (float)H) &&
                   nearest_axis_exact(W, Wo, p->scale_w, (float)Wo / (float)W);
        scales_ok = scales_ok && nearest_axis_exact(H, Ho, p->scale_h, (float)p->scale_h) &&
                    nearest_axis_exact(W, Wo, p->scale_w, (float)p->scale_w);
    } else if (p->align_corners) {
        sizes_ok = true;   /* the ratio (in - 1) / (out - 1) does not involve the scale */
    } else {               /* half_pixel: PyTorch's ratio is 1 / scale_factor, or in / out */
        sizes_ok = (p->scale_h <= 0 || (double)H * p->scale_h == (double)Ho) &&
                   (p->scale_w <= 0 || (double)W * p->scale_w == (double)Wo);
        /* ONNX Runtime copies a tensor whose size does not change (seen with 1.30: scale
         * 1.125 on 2 rows), where PyTorch still interpolates at 1 / scale */
        scales_ok = scales_ok && !(Ho == H && Wo == W);
    }
    if (sizes_ok || scales_ok) {
        *use_scales = !sizes_ok;
        return CR_OK;
    }
    char how[64] = "to a given size";
    if (p->scale_h > 0 || p->scale_w > 0)
        snprintf(how, sizeof how, "scale_factor %g x %g", p->scale_h, p->scale_w);
    return cr_fail(CR_EINVAL, "%s up-sampling %lldx%lld -> %lldx%lld (%s) has no exact ONNX "
                   "Resize: ONNX Runtime would read other source pixels or give another size",
                   p->mode == CR_UPSAMPLE_NEAREST ? "nearest" : "bilinear", (long long)H,
                   (long long)W, (long long)Ho, (long long)Wo, how);
}

/* ---- one emitter per module kind --------------------------------------------------------- */

#define VNAME 160   /* helper names: MODULE/what (module names are < 64 characters) */

/* The value name of module i's output: "input" for the model's input, "output" for the
 * last module's, else the module's name. */
static const char *value_name(const onnx_ex *e, int i)
{
    if (i == CR_MODEL_INPUT) return "input";
    if (i == e->m->n - 1) return "output";
    return e->m->mods[i].name;
}

/* "MODULE/what" into buf. */
static const char *sub_name(char *buf, const cr_module *d, const char *what)
{
    snprintf(buf, VNAME, "%s/%s", d->name, what);
    return buf;
}

/* "MODULE.suffix": a state-dict name. */
static const char *state_name(char *buf, const cr_module *d, const char *suffix)
{
    snprintf(buf, VNAME, "%s.%s", d->name, suffix);
    return buf;
}

/* Slice(x, [start], [end], [axis]) -> out; its constants are named OUT/starts, ... */
static void add_slice(onnx_ex *e, const char *x, int64_t start, int64_t end, int64_t axis,
                      const char *out)
{
    char st[VNAME + 16], en[VNAME + 16], ax[VNAME + 16];
    snprintf(st, sizeof st, "%s/starts", out);
    snprintf(en, sizeof en, "%s/ends", out);
    snprintf(ax, sizeof ax, "%s/axes", out);
    add_i64(e, st, &start, 1);
    add_i64(e, en, &end, 1);
    add_i64(e, ax, &axis, 1);
    const char *in[] = {x, st, en, ax};
    add_node(e, "Slice", out, in, 4, out, NULL);
}

/* Circular padding of x (size n along axis) by before / after: Concat(x[n-before:],
 * x, x[:after]) -> out. */
static void add_wrap(onnx_ex *e, const cr_module *d, const char *x, int64_t axis, int64_t n,
                     int64_t before, int64_t after, const char *out)
{
    char lo[VNAME], hi[VNAME];
    const char *parts[3];
    int k = 0;
    snprintf(lo, sizeof lo, "%s/wrap%lld_before", d->name, (long long)axis);
    snprintf(hi, sizeof hi, "%s/wrap%lld_after", d->name, (long long)axis);
    if (before > 0) {
        add_slice(e, x, n - before, n, axis, lo);
        parts[k++] = lo;
    }
    parts[k++] = x;
    if (after > 0) {
        add_slice(e, x, 0, after, axis, hi);
        parts[k++] = hi;
    }
    pb_buf attrs = {0};
    attr_int(&attrs, "axis", axis);
    add_node(e, "Concat", out, parts, k, out, &attrs);
}

/* Conv (with an explicit Pad, or Slice + Concat, for non-zero padding modes). */
static void emit_conv(onnx_ex *e, int i)
{
    const cr_module *d = &e->m->mods[i];
    const cr_conv_params *p = &d->conv;
    const int64_t *x = shape_of(e, d->in);
    char padded[VNAME], pads_name[VNAME], wrapped[VNAME], wname[VNAME], bname[VNAME];
    const char *xin = value_name(e, d->in);
    const bool padding = p->pad_top || p->pad_bottom || p->pad_left || p->pad_right;
    int64_t pads[4] = {p->pad_top, p->pad_left, p->pad_bottom, p->pad_right};  /* ONNX order */
    if (padding && p->pad_mode != CR_PAD_ZEROS) {
        sub_name(padded, d, "padded");
        if (p->pad_mode == CR_PAD_CIRCULAR) {
            add_wrap(e, d, xin, 2, x[2], p->pad_top, p->pad_bottom, sub_name(wrapped, d, "wrapped_h"));
            add_wrap(e, d, wrapped, 3, x[3], p->pad_left, p->pad_right, padded);
        } else {
            /* Pad's pads: begins of N, C, H, W, then their ends */
            const int64_t pv[8] = {0, 0, p->pad_top, p->pad_left, 0, 0, p->pad_bottom, p->pad_right};
            add_i64(e, sub_name(pads_name, d, "pads"), pv, 8);
            const char *in[] = {xin, pads_name};
            pb_buf attrs = {0};
            attr_string(&attrs, "mode", p->pad_mode == CR_PAD_REFLECT ? "reflect" : "edge");
            add_node(e, "Pad", sub_name(wrapped, d, "pad"), in, 2, padded, &attrs);
        }
        xin = padded;
        memset(pads, 0, sizeof pads);
    }
    const int64_t kernel[2] = {p->kernel_h, p->kernel_w}, strides[2] = {p->stride_h, p->stride_w},
                  dil[2] = {p->dilation_h, p->dilation_w};
    pb_buf attrs = {0};
    attr_ints(&attrs, "kernel_shape", kernel, 2);
    attr_ints(&attrs, "strides", strides, 2);
    attr_ints(&attrs, "pads", pads, 4);
    attr_ints(&attrs, "dilations", dil, 2);
    attr_int(&attrs, "group", p->groups);
    const char *in[] = {xin, state_name(wname, d, "weight"), state_name(bname, d, "bias")};
    add_node(e, "Conv", d->name, in, p->bias ? 3 : 2, value_name(e, i), &attrs);
    add_tensor_init(e, wname, &d->weight);
    if (p->bias) add_tensor_init(e, bname, &d->bias);
}

/* BatchNormalization with the running statistics (evaluation mode). */
static void emit_batchnorm(onnx_ex *e, int i)
{
    const cr_module *d = &e->m->mods[i];
    static const char *const suffix[4] = {"weight", "bias", "running_mean", "running_var"};
    const cr_tensor *t[4] = {&d->weight, &d->bias, &d->running_mean, &d->running_var};
    char names[4][VNAME];
    const char *in[5] = {value_name(e, d->in)};
    for (int k = 0; k < 4; k++) {
        in[k + 1] = state_name(names[k], d, suffix[k]);
        add_tensor_init(e, names[k], t[k]);
    }
    pb_buf attrs = {0};
    attr_float(&attrs, "epsilon", (float)d->bn.eps);
    add_node(e, "BatchNormalization", d->name, in, 5, value_name(e, i), &attrs);
}

/* GroupNorm as Reshape (N, G, -1) - InstanceNormalization - Reshape (N, C, H, W) - Mul
 * by the weight - Add the bias (both unsqueezed to C x 1 x 1). */
static void emit_groupnorm(onnx_ex *e, int i)
{
    const cr_module *d = &e->m->mods[i];
    const int64_t *x = shape_of(e, d->in);
    const int64_t G = d->groups;
    char gshape[VNAME], grouped[VNAME], ones[VNAME], zeros[VNAME], normed[VNAME], xshape[VNAME],
        ungrouped[VNAME], axes[VNAME], wname[VNAME], bname[VNAME], w3[VNAME], b3[VNAME],
        scaled[VNAME], nname[VNAME];
    const int64_t gs[3] = {x[0], G, -1};
    add_i64(e, sub_name(gshape, d, "group_shape"), gs, 3);
    const char *r1[] = {value_name(e, d->in), gshape};
    add_node(e, "Reshape", sub_name(nname, d, "group"), r1, 2, sub_name(grouped, d, "grouped"), NULL);

    float *v = calloc((size_t)G, sizeof *v);
    if (!v) {
        e->inits.oom = true;
        return;
    }
    for (int64_t k = 0; k < G; k++) v[k] = 1.0f;
    add_f32(e, sub_name(ones, d, "ones"), v, G);
    memset(v, 0, (size_t)G * sizeof *v);
    add_f32(e, sub_name(zeros, d, "zeros"), v, G);
    free(v);
    const char *in1[] = {grouped, ones, zeros};
    pb_buf attrs = {0};
    attr_float(&attrs, "epsilon", (float)d->eps);
    add_node(e, "InstanceNormalization", sub_name(nname, d, "normalize"), in1, 3,
             sub_name(normed, d, "normed"), &attrs);

    add_i64(e, sub_name(xshape, d, "shape"), x, 4);
    const char *r2[] = {normed, xshape};
    add_node(e, "Reshape", sub_name(nname, d, "ungroup"), r2, 2,
             sub_name(ungrouped, d, "ungrouped"), NULL);

    const int64_t ax[2] = {1, 2};
    add_i64(e, sub_name(axes, d, "axes"), ax, 2);
    const char *u1[] = {state_name(wname, d, "weight"), axes};
    const char *u2[] = {state_name(bname, d, "bias"), axes};
    add_node(e, "Unsqueeze", sub_name(w3, d, "weight_c11"), u1, 2, w3, NULL);
    add_node(e, "Unsqueeze", sub_name(b3, d, "bias_c11"), u2, 2, b3, NULL);
    const char *mul[] = {ungrouped, w3};
    add_node(e, "Mul", sub_name(scaled, d, "scaled"), mul, 2, scaled, NULL);
    const char *add[] = {scaled, b3};
    add_node(e, "Add", d->name, add, 2, value_name(e, i), NULL);
    add_tensor_init(e, wname, &d->weight);
    add_tensor_init(e, bname, &d->bias);
}

/* Resize: nearest (asymmetric, floor) or linear (align_corners or half_pixel). */
static cr_status emit_upsample(onnx_ex *e, int i)
{
    const cr_module *d = &e->m->mods[i];
    const cr_upsample_params p = up_params(e, d);
    const int64_t *x = shape_of(e, d->in), *y = e->shape[i];
    bool use_scales = false;
    cr_status s = resize_plan(&p, x, y, &use_scales);
    if (s) return s;
    char cname[VNAME];
    const char *in[4] = {value_name(e, d->in), "", "", cname};   /* X, roi, scales, sizes */
    if (use_scales) {
        const float sc[4] = {1.0f, 1.0f, (float)p.scale_h, (float)p.scale_w};
        add_f32(e, sub_name(cname, d, "scales"), sc, 4);
        in[2] = cname;
    } else {
        add_i64(e, sub_name(cname, d, "sizes"), y, 4);
    }
    pb_buf attrs = {0};
    if (p.mode == CR_UPSAMPLE_NEAREST) {
        attr_string(&attrs, "mode", "nearest");
        attr_string(&attrs, "coordinate_transformation_mode", "asymmetric");
        attr_string(&attrs, "nearest_mode", "floor");
    } else {
        attr_string(&attrs, "mode", "linear");
        attr_string(&attrs, "coordinate_transformation_mode",
                    p.align_corners ? "align_corners" : "half_pixel");
    }
    add_node(e, "Resize", d->name, in, use_scales ? 3 : 4, value_name(e, i), &attrs);
    return CR_OK;
}

/* Module i's nodes and initializers. */
static cr_status emit_module(onnx_ex *e, int i)
{
    const cr_module *d = &e->m->mods[i];
    const char *x = value_name(e, d->in), *y = value_name(e, i);
    pb_buf attrs = {0};
    switch (d->kind) {
    case CR_MOD_CONV: emit_conv(e, i); break;
    case CR_MOD_BATCHNORM: emit_batchnorm(e, i); break;
    case CR_MOD_GROUPNORM: emit_groupnorm(e, i); break;
    case CR_MOD_RELU: add_node(e, "Relu", d->name, &x, 1, y, NULL); break;
    case CR_MOD_MAXPOOL: {
        const cr_pool_params *p = &d->pool;
        const int64_t k[2] = {p->kernel_h, p->kernel_w}, st[2] = {p->stride_h, p->stride_w},
                      pads[4] = {p->pad_h, p->pad_w, p->pad_h, p->pad_w};
        attr_ints(&attrs, "kernel_shape", k, 2);
        attr_ints(&attrs, "strides", st, 2);
        attr_ints(&attrs, "pads", pads, 4);
        add_node(e, "MaxPool", d->name, &x, 1, y, &attrs);
        break;
    }
    case CR_MOD_AVGPOOL: add_node(e, "GlobalAveragePool", d->name, &x, 1, y, NULL); break;
    case CR_MOD_UPSAMPLE: return emit_upsample(e, i);
    case CR_MOD_ADD: {
        const char *in[] = {x, value_name(e, d->in2)};
        add_node(e, "Add", d->name, in, 2, y, NULL);
        break;
    }
    case CR_MOD_DROPOUT: add_node(e, "Identity", d->name, &x, 1, y, NULL); break;
    }
    return CR_OK;
}

/* ---- the model ----------------------------------------------------------------------------- */

/* Refuses what the graph cannot name: reserved value names, missing parameters. */
static cr_status check_module(const cr_module *d)
{
    if (strcmp(d->name, "input") == 0 || strcmp(d->name, "output") == 0)
        return cr_fail(CR_EINVAL, "onnx export: module '%s' (%s): the name is reserved for the "
                       "graph's %s", d->name, kind_name(d->kind), d->name);
    const bool params = d->kind == CR_MOD_CONV || d->kind == CR_MOD_BATCHNORM ||
                        d->kind == CR_MOD_GROUPNORM;
    if (params && (!d->weight.data || (d->kind != CR_MOD_CONV && !d->bias.data) ||
                   (d->kind == CR_MOD_CONV && d->conv.bias && !d->bias.data) ||
                   (d->kind == CR_MOD_BATCHNORM && (!d->running_mean.data || !d->running_var.data))))
        return cr_fail(CR_EINVAL, "onnx export: module '%s' (%s) has no parameters allocated "
                       "(build it with the cr_model_add_* functions)", d->name, kind_name(d->kind));
    return CR_OK;
}

/* Writes the ModelProto to path: {ir_version = 1, producer_name = 2, producer_version = 3,
 * opset_import = 8: OperatorSetIdProto {domain = 1 (""), version = 2}, graph = 7:
 * GraphProto {node = 1, name = 2, initializer = 5, input = 11, output = 12}}. The graph
 * is streamed in parts (its large initializers are not copied again). */
static cr_status write_model(onnx_ex *e, const char *path)
{
    pb_buf head = {0}, io = {0}, opset = {0};
    pb_int(&head, 1, CR_ONNX_IR_VERSION);
    pb_str(&head, 2, "conv2d-reimagined");
    pb_str(&head, 3, "chapter 8");
    pb_str(&opset, 1, "");
    pb_int(&opset, 2, CR_ONNX_OPSET);
    pb_msg(&head, 8, &opset);
    pb_str(&io, 2, "cr_model");                                          /* GraphProto.name */
    add_value_info(&io, 11, "input", e->in);                              /* GraphProto.input */
    add_value_info(&io, 12, "output", e->shape[e->m->n - 1]);             /* GraphProto.output */
    const size_t glen = e->nodes.n + io.n + e->inits.n;
    pb_key(&head, 7, PB_LEN);
    pb_varint(&head, glen);
    cr_status s = CR_OK;
    if (head.oom || io.oom || e->nodes.oom || e->inits.oom) {
        s = cr_fail(CR_ENOMEM, "onnx export: out of memory encoding %s", path);
    } else {
        cr_afile *a = NULL;
        s = cr_afile_open(&a, path, "ONNX");
        if (!s) {
            FILE *f = cr_afile_stream(a);
            const pb_buf *parts[4] = {&head, &e->nodes, &io, &e->inits};
            bool ok = true;
            for (int k = 0; k < 4 && ok; k++)
                ok = parts[k]->n == 0 || fwrite(parts[k]->p, 1, parts[k]->n, f) == parts[k]->n;
            if (!ok) {
                cr_afile_abort(a);
                s = cr_fail(CR_EIO, "ONNX '%s': write failed", path);
            } else {
                s = cr_afile_commit(a);
            }
        }
    }
    pb_free(&head);
    pb_free(&io);
    return s;
}

cr_status cr_onnx_export_nchw(const cr_model *m, int64_t n, int64_t c, int64_t h, int64_t w,
                              const char *path)
{
    if (!m || m->n < 1) return cr_fail(CR_EINVAL, "onnx export: the model has no modules");
    if (!path || !*path) return cr_fail(CR_EINVAL, "onnx export: path is empty");
    if (n < 1 || c < 1 || h < 1 || w < 1)
        return cr_fail(CR_EINVAL, "onnx export: input %lldx%lldx%lldx%lld: every size must be >= 1",
                       (long long)n, (long long)c, (long long)h, (long long)w);
    for (int i = 0; i < m->n; i++) {
        cr_status s = check_module(&m->mods[i]);
        if (s) return s;
    }
    onnx_ex e = {.m = m, .in = {n, c, h, w}};
    e.shape = calloc((size_t)m->n, sizeof *e.shape);
    if (!e.shape) return cr_fail(CR_ENOMEM, "onnx export: out of memory");
    cr_status s = infer_shapes(&e);
    for (int i = 0; !s && i < m->n; i++)
        if ((s = emit_module(&e, i))) s = fail_module(s, &m->mods[i]);
    if (!s) s = write_model(&e, path);
    pb_free(&e.nodes);
    pb_free(&e.inits);
    free(e.shape);
    return s;
}

cr_status cr_onnx_export(const cr_model *m, int64_t n, int64_t h, int64_t w, const char *path)
{
    if (!m || m->n < 1) return cr_fail(CR_EINVAL, "onnx export: the model has no modules");
    for (int i = 0; i < m->n; i++) {
        const cr_module *d = &m->mods[i];
        if (d->in != CR_MODEL_INPUT && !(d->kind == CR_MOD_ADD && d->in2 == CR_MODEL_INPUT))
            continue;
        if (d->kind == CR_MOD_CONV)
            return cr_onnx_export_nchw(m, n, d->conv.in_channels, h, w, path);
        if (d->kind == CR_MOD_BATCHNORM || d->kind == CR_MOD_GROUPNORM)
            return cr_onnx_export_nchw(m, n, d->channels, h, w, path);
    }
    return cr_fail(CR_EINVAL, "onnx export: no conv or norm reads the model's input, so its "
                   "channel count is unknown: use cr_onnx_export_nchw");
}
