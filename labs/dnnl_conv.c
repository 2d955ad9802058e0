/* dnnl_conv.c — oneDNN's convolution as the labs' peer (dnnl_conv.h). */
#include "dnnl_conv.h"

#include <stdio.h>
#include <string.h>

void lab_dnnl_conv_free(lab_dnnl_conv *d)
{
    if (d->conv) dnnl_primitive_destroy(d->conv);
    if (d->src_reorder) dnnl_primitive_destroy(d->src_reorder);
    if (d->dst_reorder) dnnl_primitive_destroy(d->dst_reorder);
    dnnl_memory_t mems[] = {d->user_src, d->user_dst, d->src, d->wei, d->bias, d->dst};
    for (int i = 0; i < 6; i++)
        if (mems[i] && (i < 2 || (mems[i] != d->user_src && mems[i] != d->user_dst)))
            dnnl_memory_destroy(mems[i]);
    if (d->stream) dnnl_stream_destroy(d->stream);
    if (d->eng) dnnl_engine_destroy(d->eng);
    memset(d, 0, sizeof *d);
}

/* A reorder primitive from memory `from` to memory `to` (both exist). */
static int make_reorder(dnnl_engine_t eng, dnnl_memory_t from, dnnl_memory_t to,
                        dnnl_primitive_t *out)
{
    const dnnl_memory_desc_t *fmd, *tmd;
    dnnl_memory_get_memory_desc(from, &fmd);
    dnnl_memory_get_memory_desc(to, &tmd);
    dnnl_primitive_desc_t rpd;
    if (dnnl_reorder_primitive_desc_create(&rpd, fmd, eng, tmd, eng, NULL) != dnnl_success)
        return 0;
    const int ok = dnnl_primitive_create(out, rpd) == dnnl_success;
    dnnl_primitive_desc_destroy(rpd);
    return ok;
}

/* The convolution's descriptor with layouts left to oneDNN, and the NCHW/OIHW (GOIHW)
 * descriptors of the caller's buffers. */
static int describe(const cr_conv_params *p, const cr_conv_shape *s, const lab_dnnl_types *t,
                    int has_bias, dnnl_convolution_desc_t *cd, dnnl_memory_desc_t *src_u,
                    dnnl_memory_desc_t *dst_u, dnnl_memory_desc_t *w_u, dnnl_memory_desc_t *b_md)
{
    const int64_t G = p->groups;
    dnnl_dims_t src_d = {s->batch, p->in_channels, s->h_in, s->w_in};
    dnnl_dims_t dst_d = {s->batch, p->out_channels, s->h_out, s->w_out};
    dnnl_dims_t w4 = {p->out_channels, s->cin_g, p->kernel_h, p->kernel_w};
    dnnl_dims_t w5 = {G, s->cout_g, s->cin_g, p->kernel_h, p->kernel_w};
    dnnl_dims_t b_d = {p->out_channels}, strides = {p->stride_h, p->stride_w};
    dnnl_dims_t dil = {p->dilation_h - 1, p->dilation_w - 1};
    dnnl_dims_t pl = {p->pad_top, p->pad_left}, pr = {p->pad_bottom, p->pad_right};
    dnnl_memory_desc_t src_any, dst_any, w_any;
    dnnl_memory_desc_init_by_tag(src_u, 4, src_d, t->src, dnnl_nchw);
    dnnl_memory_desc_init_by_tag(dst_u, 4, dst_d, t->dst, dnnl_nchw);
    if (G > 1) dnnl_memory_desc_init_by_tag(w_u, 5, w5, t->wei, dnnl_goihw);
    else dnnl_memory_desc_init_by_tag(w_u, 4, w4, t->wei, dnnl_oihw);
    dnnl_memory_desc_init_by_tag(b_md, 1, b_d, t->bias, dnnl_x);
    dnnl_memory_desc_init_by_tag(&src_any, 4, src_d, t->src, dnnl_format_tag_any);
    dnnl_memory_desc_init_by_tag(&dst_any, 4, dst_d, t->dst, dnnl_format_tag_any);
    if (G > 1) dnnl_memory_desc_init_by_tag(&w_any, 5, w5, t->wei, dnnl_format_tag_any);
    else dnnl_memory_desc_init_by_tag(&w_any, 4, w4, t->wei, dnnl_format_tag_any);
    return dnnl_dilated_convolution_forward_desc_init(cd, dnnl_forward_inference,
                                                      dnnl_convolution_direct, &src_any, &w_any,
                                                      has_bias ? b_md : NULL, &dst_any,
                                                      strides, dil, pl, pr) == dnnl_success;
}

void lab_dnnl_conv_init(lab_dnnl_conv *d, const cr_conv_params *p, const cr_conv_shape *s,
                        const lab_dnnl_types *t, void *x, void *w, void *b, void *y,
                        const_dnnl_primitive_attr_t attr)
{
    memset(d, 0, sizeof *d);
    if (p->pad_mode != CR_PAD_ZEROS) return;
    if (dnnl_engine_create(&d->eng, dnnl_cpu, 0) != dnnl_success ||
        dnnl_stream_create(&d->stream, d->eng, dnnl_stream_default_flags) != dnnl_success)
        return;
    dnnl_convolution_desc_t cd;
    dnnl_memory_desc_t src_u, dst_u, w_u, b_md;
    if (!describe(p, s, t, b != NULL, &cd, &src_u, &dst_u, &w_u, &b_md)) return;
    dnnl_primitive_desc_t pd;
    if (dnnl_primitive_desc_create(&pd, &cd, attr, d->eng, NULL) != dnnl_success) return;
    const char *impl = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) != dnnl_success || !impl)
        impl = "?";
    snprintf(d->impl, sizeof d->impl, "%s", impl);
    const dnnl_memory_desc_t *src_md = dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
    const dnnl_memory_desc_t *dst_md = dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    const dnnl_memory_desc_t *w_md = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    int ok = dnnl_memory_create(&d->user_src, &src_u, d->eng, x) == dnnl_success &&
             dnnl_memory_create(&d->user_dst, &dst_u, d->eng, y) == dnnl_success;
    /* src and dst in the primitive's layouts (the user memory itself if they agree) */
    if (ok && dnnl_memory_desc_equal(src_md, &src_u)) d->src = d->user_src;
    else if (ok) ok = dnnl_memory_create(&d->src, src_md, d->eng, DNNL_MEMORY_ALLOCATE) ==
                          dnnl_success && make_reorder(d->eng, d->user_src, d->src,
                                                       &d->src_reorder);
    if (ok && dnnl_memory_desc_equal(dst_md, &dst_u)) d->dst = d->user_dst;
    else if (ok) ok = dnnl_memory_create(&d->dst, dst_md, d->eng, DNNL_MEMORY_ALLOCATE) ==
                          dnnl_success && make_reorder(d->eng, d->dst, d->user_dst,
                                                       &d->dst_reorder);
    /* weights: reordered once, now */
    dnnl_memory_t user_w = NULL;
    dnnl_primitive_t w_reorder = NULL;
    ok = ok && dnnl_memory_create(&user_w, &w_u, d->eng, w) == dnnl_success &&
         dnnl_memory_create(&d->wei, w_md, d->eng, DNNL_MEMORY_ALLOCATE) == dnnl_success &&
         make_reorder(d->eng, user_w, d->wei, &w_reorder);
    if (ok) {
        dnnl_exec_arg_t a[2] = {{DNNL_ARG_FROM, user_w}, {DNNL_ARG_TO, d->wei}};
        ok = dnnl_primitive_execute(w_reorder, d->stream, 2, a) == dnnl_success &&
             dnnl_stream_wait(d->stream) == dnnl_success;
    }
    if (w_reorder) dnnl_primitive_destroy(w_reorder);
    if (user_w) dnnl_memory_destroy(user_w);
    if (ok && b) ok = dnnl_memory_create(&d->bias, &b_md, d->eng, b) == dnnl_success;
    ok = ok && dnnl_primitive_create(&d->conv, pd) == dnnl_success;
    dnnl_primitive_desc_destroy(pd);
    d->ok = ok;
}

cr_status lab_dnnl_conv_run(void *arg)
{
    lab_dnnl_conv *d = arg;
    dnnl_status_t s = dnnl_success;
    if (d->src_reorder) {
        dnnl_exec_arg_t a[2] = {{DNNL_ARG_FROM, d->user_src}, {DNNL_ARG_TO, d->src}};
        s = dnnl_primitive_execute(d->src_reorder, d->stream, 2, a);
    }
    dnnl_exec_arg_t ca[4] = {{DNNL_ARG_SRC, d->src}, {DNNL_ARG_WEIGHTS, d->wei},
                             {DNNL_ARG_DST, d->dst}, {DNNL_ARG_BIAS, d->bias}};
    if (s == dnnl_success) s = dnnl_primitive_execute(d->conv, d->stream, d->bias ? 4 : 3, ca);
    if (s == dnnl_success && d->dst_reorder) {
        dnnl_exec_arg_t a[2] = {{DNNL_ARG_FROM, d->dst}, {DNNL_ARG_TO, d->user_dst}};
        s = dnnl_primitive_execute(d->dst_reorder, d->stream, 2, a);
    }
    if (s == dnnl_success) s = dnnl_stream_wait(d->stream);
    return s == dnnl_success ? CR_OK : cr_fail(CR_EINVAL, "oneDNN convolution: status %d", (int)s);
}
