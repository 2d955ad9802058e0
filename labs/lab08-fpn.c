/* lab08-fpn.c — chapter 8's lab: smp's FPN with a ResNeXt-50 32x4d encoder on CamVid.
 *
 *   lab08-fpn train --data DIR   the recipe: AdamW (weight decay 1e-4), linear warm-up then
 *       cosine decay over the run, augmented crops (scale 0.75..1.5, flips, brightness and
 *       contrast), cross-entropy ignoring void, batch 8. Every epoch: train loss, val mean
 *       IoU (frames rendered whole to --eval-size, labels by nearest), seconds; an atomic
 *       checkpoint every epoch (--checkpoint), --resume continues (--epochs stays the
 *       total). At the end: val and test IoU per class, mean IoU and pixel accuracy.
 *   lab08-fpn predict --weights W --images DIR --out DIR   colour masks in CamVid's
 *       palette, and with --panels N --data DIR panels image | truth | prediction of the
 *       first N test frames (one PNG each in --out, and/or stacked into one --grid FILE:
 *       the book's figure of a reader's run).
 *   lab08-fpn latency   forward latency in evaluation mode of the full FPN (random init)
 *       per batch size: mean, median and p90 ms, images/s and peak memory (the process's
 *       resident high-water mark, VmHWM of /proc/self/status, reset before each batch size
 *       through /proc/self/clear_refs), beside PyTorch's (reference/bench_fpn_pytorch.py,
 *       run with /usr/bin/python3 when torch and torchvision import there); --profile adds
 *       the time per layer kind and per convolution shape. Ours runs with
 *       OMP_WAIT_POLICY=PASSIVE and a short spin on a quiet machine unless the user set
 *       the policy (lab_timing_wait_policy).
 *   lab08-fpn step   one training step (forward, cross-entropy, backward, AdamW) of the full
 *       FPN on random crops (--crop, --batch), each phase timed, beside PyTorch's step
 *       (the same script); --profile as for latency. --net block: the same for ResNeXt-50's
 *       layer2.0 bottleneck alone (input 256 x crop/4 x crop/4, loss mean(y^2)); --net lab4:
 *       for lab 4's FCN (chapter 4) on random 90x120 frames.
 * The lab is thin: the loop, evaluation, predictor and pictures are chapter 8's module
 * (chapters/08-fpn-camvid/train8.h), the network is fpn.h.
 * Train CSV columns: lab 4's (lab,kind,case,impl,pass,k,batch,threads,ms,gflops,peak_bytes,
 * epoch,step,loss,split,class,iou) then lr,seconds,pixel_accuracy. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "augment.h"
#include "dataset.h"
#include "fpn.h"
#include "jpeg_io.h"
#include "lab_common.h"
#include "loss.h"
#include "metrics.h"
#include "png_io.h"
#include "progress.h"
#include "train.h"
#include "train8.h"
#ifdef CR_HAVE_CUDA
#include "cuda_gemm.h"     /* chapter 5: the device, buffers, cr_cuda_sync */
#include "cuda_layers.h"   /* chapter 5: a chapter 4 model's evaluation forward on the device */
#include "cuda_train.h"    /* chapter 5: chapter 4's training step on the device */
#endif

#define QUICK_TRAIN 16        /* --quick: the first 16 train frames, 8 val and 8 test */
#define QUICK_CROP 64
#define EVAL_BATCH 8
#ifndef CR_BENCH_SCRIPT
#define CR_BENCH_SCRIPT "reference/bench_fpn_pytorch.py"
#endif

/* ---- options ------------------------------------------------------------------------------ */

static const char *data_dir, *checkpoint_path, *resume_path, *eval_size_str = "192x256";
static const char *weights_path, *images_dir, *out_dir, *batches_str = "1,2,4,8,16,32,64";
static const char *size_str = "384x480", *limit_str, *device_str = "cpu", *grid_path;
static const char *precisions_str = "fp32";
static int crop = 192, batch_size = 8, epochs = 0, warmup_epochs = 1, classes = CR_CAMVID_CLASSES;
static int train_seed = 1, factor = 2, panels = 0, ours_only = 0, profile = 0, steps = 3;
static double lr = 1e-3, minutes = 0;

static const cr_arg train_args[] = {
    {"data", CR_ARG_STRING, &data_dir, "DIR", "CamVid in SegNet's layout (train/, trainannot/, ...)", 0, -1},
    {"crop", CR_ARG_INT, &crop, "S", "training crop side, a multiple of 32 (192)", 32, 4096},
    {"eval-size", CR_ARG_STRING, &eval_size_str, "HxW", "evaluation size, multiples of 32 (192x256)", 0, -1},
    {"factor", CR_ARG_INT, &factor, "N", "frames reduced by N before cropping (2: 480x360 -> 240x180)", 1, 8},
    {"batch", CR_ARG_INT, &batch_size, "N", "frames per step (8)", 1, 256},
    {"epochs", CR_ARG_INT, &epochs, "N", "total epochs (the schedule spans them)", 1, 10000},
    {"minutes", CR_ARG_DOUBLE, &minutes, "M", "instead of --epochs: as many epochs as fit in M minutes", 0, -1},
    {"lr", CR_ARG_DOUBLE, &lr, "X", "AdamW peak learning rate (1e-3)", 0, -1},
    {"warmup-epochs", CR_ARG_INT, &warmup_epochs, "N", "linear warm-up epochs (1)", 0, 1000},
    {"classes", CR_ARG_INT, &classes, "N", "output classes (11: void ignored)", 2, 256},
    {"checkpoint", CR_ARG_STRING, &checkpoint_path, "FILE", "checkpoint after every epoch (atomic)", 0, -1},
    {"resume", CR_ARG_STRING, &resume_path, "FILE", "continue a run from a --checkpoint FILE", 0, -1},
    {"seed", CR_ARG_INT, &train_seed, "N", "init, order and augmentation seed (1)", 0, 2147483647},
    {"limit", CR_ARG_STRING, &limit_str, "T[,E]", "load only the first T train and E val/test frames (short measurements)", 0, -1},
};

static const cr_arg predict_args[] = {
    {"weights", CR_ARG_STRING, &weights_path, "FILE", "a state dict or checkpoint of the FPN", 0, -1},
    {"images", CR_ARG_STRING, &images_dir, "DIR", "a folder of PNG or JPEG frames (optional with --panels)", 0, -1},
    {"out", CR_ARG_STRING, &out_dir, "DIR", "where the masks (and panels) go (must exist; optional with --grid)", 0, -1},
    {"eval-size", CR_ARG_STRING, &eval_size_str, "HxW", "network input size, multiples of 32 (192x256)", 0, -1},
    {"panels", CR_ARG_INT, &panels, "N", "panels of the first N test frames of --data", 0, 10000},
    {"data", CR_ARG_STRING, &data_dir, "DIR", "CamVid, for --panels", 0, -1},
    {"grid", CR_ARG_STRING, &grid_path, "FILE", "the --panels stacked top to bottom into one PNG (atomic)", 0, -1},
    {"classes", CR_ARG_INT, &classes, "N", "output classes of the weights (11)", 2, 256},
};

/* The panels (each 3w x h RGB) stacked top to bottom, GRID_GAP white rows between two. */
#define GRID_GAP 4
static cr_status grid_alloc(cr_image *g, int64_t n, int64_t h, int64_t w)
{
    g->height = (int)(n * h + (n - 1) * GRID_GAP);
    g->width = (int)(3 * w);
    g->channels = 3;
    g->pixels = malloc((size_t)g->height * (size_t)g->width * 3);
    if (!g->pixels) return cr_fail(CR_ENOMEM, "predict: out of memory for the --grid image");
    memset(g->pixels, 255, (size_t)g->height * (size_t)g->width * 3);
    return CR_OK;
}

static const cr_arg latency_args[] = {
    {"batches", CR_ARG_STRING, &batches_str, "LIST", "batch sizes (1,2,4,8,16,32,64)", 0, -1},
    {"size", CR_ARG_STRING, &size_str, "HxW", "input size, multiples of 32 (384x480)", 0, -1},
    {"classes", CR_ARG_INT, &classes, "N", "output classes (11)", 2, 256},
    {"ours-only", CR_ARG_FLAG, &ours_only, NULL, "skip PyTorch's rows (tests)", 0, -1},
    {"device", CR_ARG_STRING, &device_str, "D", "cpu, or cuda (a build with nvcc, chapter 5's kernels, a GPU)", 0, -1},
    {"profile", CR_ARG_FLAG, &profile, NULL, "time per layer kind and per conv shape", 0, -1},
    {"precisions", CR_ARG_STRING, &precisions_str, "LIST", "with --device cuda: the convolutions' "
     "precisions, of fp32, tf32, fp16, bf16 (fp32)", 0, -1},
};

/* `step --net`: the network one timed training step trains. */
typedef enum { NET_FPN = 0, NET_BLOCK, NET_LAB4, NET_COUNT } step_net;
static const char *const step_net_names[NET_COUNT] = {"fpn", "block", "lab4"};
static const char *step_net_str = "fpn";
static int step_crop = 0;     /* 0: the network's default (STEP_CROP_FPN, STEP_CROP_BLOCK) */
#define STEP_CROP_FPN 192
#define STEP_CROP_BLOCK 224   /* block: the image whose layer2 input (1/4: 56 x 56) it gets */
#define STEP_CROP_BLOCK_QUICK 64
#define LAB4_H 90             /* lab 4's CamVid frames at its --factor 4: 480 x 360 / 4 */
#define LAB4_W 120

static const cr_arg step_args[] = {
    {"net", CR_ARG_STRING, &step_net_str, "NAME", "fpn (the whole FPN), block (ResNeXt-50's "
     "layer2.0 bottleneck) or lab4 (lab 4's FCN at 90x120)", 0, -1},
    {"crop", CR_ARG_INT, &step_crop, "S", "square image side: fpn a multiple of 32 (192); block a "
     "multiple of 4, its input 256 x S/4 x S/4 (224; 64 with --quick); not lab4", 4, 4096},
    {"batch", CR_ARG_INT, &batch_size, "N", "frames per step (8)", 1, 256},
    {"steps", CR_ARG_INT, &steps, "N", "timed steps after one warm-up step (3)", 1, 1000},
    {"classes", CR_ARG_INT, &classes, "N", "output classes (11)", 2, 256},
    {"ours-only", CR_ARG_FLAG, &ours_only, NULL, "skip PyTorch's step (tests)", 0, -1},
    {"profile", CR_ARG_FLAG, &profile, NULL, "time per layer kind and per conv shape", 0, -1},
    {"device", CR_ARG_STRING, &device_str, "D", "cpu, or cuda (a build with nvcc, chapter 5's "
     "training step, a GPU; --net fpn or lab4)", 0, -1},
};

static const char *const train_columns[] = {
    "lab", "kind", "case", "impl", "pass", "k", "batch", "threads", "ms", "gflops",
    "peak_bytes", "epoch", "step", "loss", "split", "class", "iou", "lr", "seconds",
    "pixel_accuracy", NULL};

static const char *const latency_columns[] = {
    "batch_size", "device", "precision", "latency_mean_ms", "latency_median_ms",
    "latency_p90_ms", "images_per_s", "peak_memory_mib", "impl", "threads", NULL};

/* The network: the full ResNeXt-50 FPN, or with --quick the width-reduced variant of the
 * golden tests (same structure: stem 8, planes 4/8/16/32, blocks 1/2/1/1, groups 4). */
static cr_fpn_config net_config(int quick)
{
    cr_fpn_config c = cr_fpn_config_resnext50(classes);
    if (quick) {
        const cr_fpn_config r = {.classes = classes, .stem = 8, .planes = {4, 8, 16, 32},
                                 .blocks = {1, 2, 1, 1}, .groups = 4, .width_per_group = 16,
                                 .pyramid = 16, .segmentation = 32, .dropout = 0.2};
        c = r;
    }
    return c;
}

/* Builds the network into m (initialised here; free with cr_model_free). */
static cr_status build_net(cr_model *m, int quick)
{
    const cr_fpn_config c = net_config(quick);
    cr_model_init(m);
    return cr_fpn_build(m, &c);
}

/* Fails (printing) unless path's directory takes a new file: tries path.tmp now. */
static int check_writable(const char *program, const char *opt, const char *path)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        fprintf(stderr, "%s: --%s '%s': cannot write '%s': %s\n", program, opt, path, tmp,
                strerror(errno));
        return 0;
    }
    fclose(f);
    remove(tmp);
    return 1;
}

/* Clears a live progress line on a terminal before a table row. */
static void clear_progress(const cr_progress *prog)
{
    if (prog && prog->tty) fputs("\r\033[K", stderr);
}

/* ---- train ---------------------------------------------------------------------------------- */

typedef struct {
    cr_frames train, val, test;
    cr_model model;
    cr_trainer trainer;
    cr_augment aug;
    int64_t eh, ew;
    int start_epoch, total_epochs;
    double load_s;
} train_run;

static void train_run_free(train_run *r)
{
    cr_trainer_free(&r->trainer);
    cr_model_free(&r->model);
    cr_frames_free(&r->train);
    cr_frames_free(&r->val);
    cr_frames_free(&r->test);
}

/* Checks the train options beyond their types; returns LAB_RUN or LAB_EXIT_USAGE. */
static int check_train_args(const lab_ctx *ctx, int64_t *eh, int64_t *ew, long long lim[2])
{
    const char *p = ctx->program;
    if (!data_dir) {
        fprintf(stderr, "%s: --data DIR is required. %s\n", p, cr_camvid_howto());
        return LAB_EXIT_USAGE;
    }
    if (crop % 32) {
        fprintf(stderr, "%s: --crop: expected a multiple of 32 (the network divides by 32), got %d\n", p, crop);
        return LAB_EXIT_USAGE;
    }
    if (!lab_parse_fpn_size(p, "eval-size", eval_size_str, eh, ew)) return LAB_EXIT_USAGE;
    if (!(lr > 0) || !isfinite(lr)) {
        fprintf(stderr, "%s: --lr: expected a finite number > 0, got %g\n", p, lr);
        return LAB_EXIT_USAGE;
    }
    if (minutes != 0 && (!(minutes > 0) || !isfinite(minutes))) {
        fprintf(stderr, "%s: --minutes: expected a finite number > 0, got %g\n", p, minutes);
        return LAB_EXIT_USAGE;
    }
    if (minutes > 0 && epochs > 0) {
        fprintf(stderr, "%s: --epochs and --minutes: give one of them\n", p);
        return LAB_EXIT_USAGE;
    }
    if (minutes > 0 && resume_path) {
        fprintf(stderr, "%s: --minutes with --resume: give --epochs (the total) to resume\n", p);
        return LAB_EXIT_USAGE;
    }
    if (epochs == 0 && minutes == 0) epochs = ctx->quick ? 1 : 25;
    if (epochs > 0 && warmup_epochs >= epochs && !ctx->quick) {
        fprintf(stderr, "%s: --warmup-epochs %d leaves no epoch of cosine decay in --epochs %d\n",
                p, warmup_epochs, epochs);
        return LAB_EXIT_USAGE;
    }
    lim[0] = lim[1] = 0;
    if (limit_str) {
        char tail;
        const int n = sscanf(limit_str, "%lld,%lld%c", &lim[0], &lim[1], &tail);
        if (n < 1 || n > 2 || lim[0] < 1 || (n == 2 && lim[1] < 1)) {
            fprintf(stderr, "%s: --limit: expected T or T,E (frames, >= 1), got '%s'\n", p, limit_str);
            return LAB_EXIT_USAGE;
        }
    }
    if (ctx->quick) {
        lim[0] = lim[0] ? lim[0] : QUICK_TRAIN;
        lim[1] = lim[1] ? lim[1] : QUICK_TRAIN / 2;
    }
    if (checkpoint_path && !check_writable(p, "checkpoint", checkpoint_path)) return LAB_EXIT_FAILED;
    return LAB_RUN;
}

/* Loads and checks every split, builds the network and trainer, reads --resume: all
 * before any work. Returns a lab exit code (LAB_EXIT_OK to go on). */
static int prepare_training(const lab_ctx *ctx, train_run *r, const long long lim[2])
{
    const double t0 = cr_now();
    const char *splits[3] = {"train", "val", "test"};
    cr_frames *fr[3] = {&r->train, &r->val, &r->test};
    for (int i = 0; i < 3; i++) {
        cr_status s = cr_camvid_load_frames(data_dir, splits[i], factor, i == 0 ? lim[0] : lim[1], fr[i]);
        if (s) {
            fprintf(stderr, "%s: %s\n", ctx->program, cr_last_error());
            return s == CR_EIO ? LAB_EXIT_USAGE : LAB_EXIT_FAILED;
        }
    }
    r->load_s = cr_now() - t0;
    cr_augment_default(&r->aug, ctx->quick ? QUICK_CROP : crop);
    cr_train_config c = cr_train_config_default();
    c.lr = lr;
    c.weight_decay = 1e-4;
    c.batch = batch_size;
    c.epochs = epochs > 0 ? epochs : warmup_epochs + 1;   /* --minutes: fixed after epoch 1 */
    c.warmup_epochs = warmup_epochs < c.epochs ? warmup_epochs : c.epochs;
    c.seed = (uint64_t)train_seed;
    c.flips = false;                                      /* the augmentation flips */
    c.ignore_index = CR_CAMVID_IGNORE;
    cr_status s;
    if ((s = build_net(&r->model, ctx->quick)) || (s = cr_model_init_params(&r->model, (uint64_t)train_seed))) {
        fprintf(stderr, "%s: building the network: %s\n", ctx->program, cr_last_error());
        return LAB_EXIT_FAILED;
    }
    if ((s = cr_trainer_init(&r->trainer, &r->model, &c, r->train.count, r->aug.crop, r->aug.crop))) {
        fprintf(stderr, "%s: --batch %d: %s\n", ctx->program, batch_size, cr_last_error());
        return s == CR_EINVAL ? LAB_EXIT_USAGE : LAB_EXIT_FAILED;
    }
    r->total_epochs = c.epochs;
    if (resume_path) {
        if ((s = cr_checkpoint_load(&r->trainer, resume_path))) {
            fprintf(stderr, "%s: --resume: %s\n", ctx->program, cr_last_error());
            return s == CR_EINVAL ? LAB_EXIT_USAGE : LAB_EXIT_FAILED;
        }
        r->start_epoch = r->trainer.epoch;
        if (r->start_epoch >= epochs) {
            fprintf(stderr, "%s: --resume: '%s' already holds %d epochs; --epochs %d (the total) "
                    "leaves none to train\n", ctx->program, resume_path, r->start_epoch, epochs);
            return LAB_EXIT_USAGE;
        }
    }
    return LAB_EXIT_OK;
}

/* Prints and writes per-class IoU and pixel accuracy of a split; returns the mean IoU. */
static double report_iou(lab_ctx *ctx, const char *split, const cr_confusion *conf, int epoch)
{
    double iou[256];
    const double mean = cr_confusion_iou(conf, iou), acc = cr_confusion_pixel_accuracy(conf);
    printf("%-5s", split);
    for (int c = 0; c < conf->classes; c++) {
        char name[32];
        if (cr_camvid_class_name(c)) snprintf(name, sizeof name, "%s", cr_camvid_class_name(c));
        else snprintf(name, sizeof name, "class_%d", c);
        printf(" %6.3f", iou[c]);
        lab_csv_row(ctx, "lab08,iou,camvid,ours,,,,%d,,,,%d,,,%s,%s,%.4f,,,", ctx->threads, epoch,
                    split, name, iou[c]);
    }
    printf("  %6.3f  %6.3f\n", mean, acc);
    lab_csv_row(ctx, "lab08,iou,camvid,ours,,,,%d,,,,%d,,,%s,mean,%.4f,,,%.4f", ctx->threads,
                epoch, split, mean, acc);
    return mean;
}

typedef struct {
    lab_ctx *ctx;
    cr_progress *prog;
    double first_loss;
} step_ctx;

/* After each training step: a CSV row and the progress line (with its ETA). */
static void on_step(void *arg, const cr_step_info *info)
{
    step_ctx *c = arg;
    if (isnan(c->first_loss)) c->first_loss = info->loss;
    lab_csv_row(c->ctx, "lab08,train,camvid_crop%d,ours,forward+backward,,%d,%d,%.3f,,,%d,%lld,"
                "%.6f,train,,,%.6g,,", crop, batch_size, c->ctx->threads, info->ms, info->epoch,
                (long long)info->step, info->loss, info->lr);
    char what[80];
    snprintf(what, sizeof what, "epoch %d loss %.4f, %.2f s/step", info->epoch, info->loss, info->ms / 1e3);
    cr_progress_step(c->prog, what);
}

/* --minutes: after the first epoch, the run's length in epochs from its time. */
static void fix_epochs_by_time(train_run *r, double epoch_s)
{
    cr_trainer *t = &r->trainer;
    int e = (int)floor(minutes * 60.0 / (epoch_s > 1e-3 ? epoch_s : 1e-3));
    if (e < t->epoch) e = t->epoch;
    if (e > 10000) e = 10000;
    r->total_epochs = epochs = e;
    t->cfg.epochs = e;
    t->total_steps = t->steps_per_epoch * e;
}

static int run_train(lab_ctx *ctx, train_run *r)
{
    cr_trainer *t = &r->trainer;
    printf("training on CamVid %s: %lld train, %lld val, %lld test frames of %lldx%lld (1/%d), "
           "loaded in %.1f s%s\n", data_dir, (long long)r->train.count, (long long)r->val.count,
           (long long)r->test.count, (long long)r->train.width, (long long)r->train.height, factor,
           r->load_s, ctx->quick ? "; --quick: reduced network, first frames" : "");
    printf("  network: FPN + %s, %d modules, %lld parameters; AdamW lr %.1e, weight decay %g, "
           "warm-up %d epoch(s) then cosine; batch %d, crop %lld (scale 0.75-1.5, flips, "
           "brightness/contrast 0.2); eval at %lldx%lld; seed %d; %s\n",
           ctx->quick ? "a width-reduced ResNeXt" : "ResNeXt-50 32x4d", r->model.n,
           (long long)cr_model_num_scalars(&r->model), lr, t->cfg.weight_decay, t->cfg.warmup_epochs,
           batch_size, (long long)r->aug.crop, (long long)r->eh, (long long)r->ew, train_seed,
           minutes > 0 ? "epochs by --minutes" : "");
    if (resume_path)
        printf("  resumed from %s after epoch %d (step %lld)\n", resume_path, r->start_epoch,
               (long long)t->step);
    cr_confusion conf = {0};
    cr_status s = cr_confusion_init(&conf, classes);
    cr_progress prog;
    cr_progress_begin(&prog, "training steps", (long)((r->total_epochs - r->start_epoch) * t->steps_per_epoch));
    step_ctx sc = {ctx, &prog, NAN};
    double last_loss = NAN;
    const double t_train = cr_now();
    printf("  %5s %10s %9s %8s\n", "epoch", "train loss", "val mIoU", "seconds");
    while (!s && t->epoch < r->total_epochs) {
        const double te = cr_now();
        if ((s = cr_fpn_train_epoch(t, &r->train, &r->aug, on_step, &sc, &last_loss))) break;
        const double train_s = cr_now() - te;
        if (minutes > 0 && t->epoch == 1) {
            fix_epochs_by_time(r, train_s * 1.15);   /* evaluation adds about a tenth */
            prog.total = (long)(r->total_epochs * t->steps_per_epoch);
        }
        cr_confusion_reset(&conf);
        double vloss;
        if ((s = cr_fpn_evaluate(&r->model, &r->val, r->eh, r->ew, EVAL_BATCH, CR_CAMVID_IGNORE,
                                 &vloss, &conf)))
            break;
        const double miou = cr_confusion_iou(&conf, NULL), secs = cr_now() - te;
        clear_progress(&prog);
        printf("  %5d %10.4f %9.4f %8.1f\n", t->epoch, last_loss, miou, secs);
        fflush(stdout);
        lab_csv_row(ctx, "lab08,epoch,camvid_crop%d,ours,,,%d,%d,,,,%d,%lld,%.6f,val,mean,%.4f,%.6g,%.2f,",
                    crop, batch_size, ctx->threads, t->epoch, (long long)t->step, last_loss, miou,
                    t->lr, secs);
        if (checkpoint_path && (s = cr_checkpoint_save(t, checkpoint_path, NULL))) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", cr_last_error());
            s = cr_fail(s, "--checkpoint: %s", msg);
        }
    }
    cr_progress_end(&prog);
    int rc = LAB_EXIT_OK;
    if (!s) {
        printf("\n  IoU per class at %lldx%lld (void ignored; nan: in neither truth nor prediction), "
               "mean IoU, pixel accuracy:\n%-5s", (long long)r->eh, (long long)r->ew, "");
        for (int c = 0; c < classes && c < CR_CAMVID_CLASSES; c++) printf(" %6.6s", cr_camvid_class_name(c));
        printf("  %6s  %6s\n", "mean", "pixacc");
        const cr_frames *sp[2] = {&r->val, &r->test};
        const char *names[2] = {"val", "test"};
        double m[2] = {0, 0};
        for (int i = 0; i < 2 && !s; i++) {
            cr_confusion_reset(&conf);
            s = cr_fpn_evaluate(&r->model, sp[i], r->eh, r->ew, EVAL_BATCH, CR_CAMVID_IGNORE, NULL, &conf);
            if (!s) m[i] = report_iou(ctx, names[i], &conf, t->epoch);
        }
        if (!s)
            printf("\n  loss %.4f (first step) -> %.4f (last epoch's mean); val mean IoU %.3f, test "
                   "%.3f; %.0f s of training, %.2f s per step\n", sc.first_loss, last_loss, m[0], m[1],
                   cr_now() - t_train, (cr_now() - t_train) / (double)(t->step ? t->step : 1));
        if (!s && checkpoint_path) printf("  checkpoint: %s (epoch %d)\n", checkpoint_path, t->epoch);
    }
    if (s) {
        clear_progress(&prog);
        fprintf(stderr, "%s: %s\n", ctx->program, cr_last_error());
        rc = LAB_EXIT_FAILED;
    }
    cr_confusion_free(&conf);
    return rc;
}

static int cmd_train(int argc, char **argv)
{
    lab_ctx ctx;
    int rc = lab_init(&ctx, argc, argv, "lab08-fpn train",
                      "Chapter 8: trains smp's FPN + ResNeXt-50 32x4d on CamVid (AdamW, warm-up + "
                      "cosine, augmented crops).", train_args, LAB_COUNT(train_args));
    if (rc != LAB_RUN) return rc;
    train_run r;
    memset(&r, 0, sizeof r);
    long long lim[2];
    if ((rc = check_train_args(&ctx, &r.eh, &r.ew, lim)) != LAB_RUN) return rc;
    if (ctx.quick && strcmp(eval_size_str, "192x256") == 0) r.eh = 64, r.ew = 96;
    if ((rc = prepare_training(&ctx, &r, lim)) != LAB_EXIT_OK) {
        train_run_free(&r);
        return rc;
    }
    lab_banner(&ctx, "chapter 8, FPN + ResNeXt-50 32x4d on CamVid: training");
    char note[200];
    snprintf(note, sizeof note, "seed %d, crop %lld, eval %lldx%lld, factor %d, batch %d, AdamW lr %g wd 1e-4, "
             "warm-up %d, %s network", train_seed, (long long)r.aug.crop, (long long)r.eh,
             (long long)r.ew, factor, batch_size, lr, warmup_epochs, ctx.quick ? "reduced" : "full");
    const char *const extra[] = {"training", note, NULL};
    if (lab_csv_begin(&ctx, train_columns, extra) != CR_OK) {
        fprintf(stderr, "%s: %s\n", ctx.program, cr_last_error());
        train_run_free(&r);
        return LAB_EXIT_FAILED;
    }
    rc = run_train(&ctx, &r);
    train_run_free(&r);
    return lab_finish(&ctx, rc);
}

/* ---- predict -------------------------------------------------------------------------------- */

/* Reads a PNG or JPEG frame as RGB. */
static cr_status read_rgb(const char *path, cr_image *img)
{
    return cr_is_jpeg_name(path) ? cr_jpeg_read(path, 3, img) : cr_png_read(path, 3, img);
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The PNG/JPEG file names of dir, sorted; *n receives their count (free each and the array). */
static char **list_images(const char *dir, int *n)
{
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) return NULL;
    char **v = NULL;
    int cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        const size_t L = strlen(e->d_name);
        const int png = L > 4 && strcmp(e->d_name + L - 4, ".png") == 0;
        if (!png && !cr_is_jpeg_name(e->d_name)) continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 64;
            char **nv = realloc(v, (size_t)cap * sizeof *v);
            if (!nv) break;
            v = nv;
        }
        if (!(v[*n] = strdup(e->d_name))) break;
        (*n)++;
    }
    closedir(d);
    if (*n) qsort(v, (size_t)*n, sizeof *v, name_cmp);
    return v;
}

/* Renders an RGB image to x[0] (1 x 3 x eh x ew) as evaluation does. */
static cr_status image_to_input(const cr_image *img, cr_tensor *x, int32_t *lab)
{
    cr_frames f = {.count = 1, .height = img->height, .width = img->width,
                   .full_height = img->height, .full_width = img->width, .factor = 1,
                   .rgb = img->pixels};
    f.labels = calloc((size_t)img->height * (size_t)img->width, 1);
    if (!f.labels) return cr_fail(CR_ENOMEM, "predict: out of memory");
    const int64_t idx = 0;
    cr_status s = cr_frames_eval_batch(&f, &idx, 1, x, lab);
    free(f.labels);
    return s;
}

/* "DIR/STEM.png" (the stem of name) into buf; suffix inserted before .png. */
static void out_name(char *buf, size_t len, const char *dir, const char *name, const char *suffix)
{
    const char *dot = strrchr(name, '.');
    const int stem = dot ? (int)(dot - name) : (int)strlen(name);
    snprintf(buf, len, "%s/%.*s%s.png", dir, stem, name, suffix);
}

static int cmd_predict(int argc, char **argv)
{
    lab_ctx ctx;
    int rc = lab_init(&ctx, argc, argv, "lab08-fpn predict",
                      "Chapter 8: colour masks of a folder of frames, and panels image | truth | "
                      "prediction of test frames.", predict_args, LAB_COUNT(predict_args));
    if (rc != LAB_RUN) return rc;
    const char *p = ctx.program;
    int64_t eh, ew;
    struct stat st;
    if (!weights_path || (!images_dir && panels == 0)) {
        fprintf(stderr, "%s: --weights FILE is required, and --images DIR or --panels N\n", p);
        return LAB_EXIT_USAGE;
    }
    if (grid_path && panels == 0) {
        fprintf(stderr, "%s: --grid FILE needs --panels N (the panels it stacks)\n", p);
        return LAB_EXIT_USAGE;
    }
    if (!out_dir && (images_dir || !grid_path)) {
        fprintf(stderr, "%s: --out DIR is required (where the %s go)\n", p, images_dir ? "masks" : "panels");
        return LAB_EXIT_USAGE;
    }
    if (!lab_parse_fpn_size(p, "eval-size", eval_size_str, &eh, &ew)) return LAB_EXIT_USAGE;
    if (out_dir && (stat(out_dir, &st) != 0 || !S_ISDIR(st.st_mode))) {
        fprintf(stderr, "%s: --out '%s': not an existing folder\n", p, out_dir);
        return LAB_EXIT_USAGE;
    }
    if (panels > 0 && !data_dir) {
        fprintf(stderr, "%s: --panels %d needs --data DIR (the test split's labels)\n", p, panels);
        return LAB_EXIT_USAGE;
    }
    int n = 0;
    char **names = images_dir ? list_images(images_dir, &n) : NULL;
    cr_model m;
    cr_st_file *f = NULL;
    cr_frames test = {0};
    cr_tensor x = {0};
    int32_t *lab = malloc((size_t)(eh * ew) * sizeof *lab), *pred = malloc((size_t)(eh * ew) * sizeof *pred);
    uint8_t *rgb = malloc((size_t)(eh * ew * 3));
    cr_status s = build_net(&m, ctx.quick);
    if (!s && images_dir && n == 0) s = cr_fail(CR_EIO, "--images '%s': no PNG or JPEG file (or not a folder)", images_dir);
    if (!s && (!lab || !pred || !rgb)) s = cr_fail(CR_ENOMEM, "predict: out of memory");
    if (!s) s = cr_st_load(&f, weights_path);
    if (!s) s = cr_model_load_st(&m, f, weights_path, "optimizer.");
    if (!s && panels > 0) s = cr_camvid_load_frames(data_dir, "test", 1, panels, &test);
    if (!s) s = cr_tensor_alloc4(&x, 1, 3, eh, ew);
    if (s) {
        fprintf(stderr, "%s: %s\n", p, cr_last_error());
        rc = LAB_EXIT_USAGE;
        goto done;
    }
    lab_banner(&ctx, "chapter 8, FPN + ResNeXt-50 32x4d on CamVid: prediction");
    for (int i = 0; i < n && !s; i++) {
        char path[4096], outp[4096];
        cr_image img = {0}, mask = {0};
        snprintf(path, sizeof path, "%s/%s", images_dir, names[i]);
        out_name(outp, sizeof outp, out_dir, names[i], "_mask");
        if (!(s = read_rgb(path, &img)) && !(s = image_to_input(&img, &x, lab)) &&
            !(s = cr_fpn_predict(&m, &x, pred)) && !(s = cr_camvid_colorize(pred, eh, ew, &mask)))
            s = cr_png_write(outp, &mask);
        cr_image_free(&img);
        cr_image_free(&mask);
    }
    if (!s && images_dir)
        printf("  %d colour masks (%lldx%lld, CamVid's palette) in %s\n", n, (long long)ew, (long long)eh, out_dir);
    cr_image grid = {0};
    if (!s && grid_path && test.count) s = grid_alloc(&grid, test.count, eh, ew);
    for (int64_t i = 0; i < test.count && !s; i++) {
        char outp[4096];
        cr_image panel = {0};
        if (!(s = cr_frames_eval_batch(&test, &i, 1, &x, lab)) && !(s = cr_fpn_predict(&m, &x, pred))) {
            cr_denormalize_rgb(&x, 0, rgb);
            s = cr_fpn_panel(rgb, lab, pred, eh, ew, &panel);
        }
        if (!s && out_dir) {
            out_name(outp, sizeof outp, out_dir, test.names[i], "_panel");
            s = cr_png_write(outp, &panel);
        }
        if (!s && grid.pixels)   /* panel i's rows at row i * (h + gap) of the grid */
            memcpy(grid.pixels + (size_t)(i * (eh + GRID_GAP)) * (size_t)grid.width * 3, panel.pixels,
                   (size_t)(eh * 3 * ew * 3));
        cr_image_free(&panel);
    }
    if (!s && test.count && out_dir)
        printf("  %lld panels (image | truth | prediction) in %s\n", (long long)test.count, out_dir);
    if (!s && grid.pixels && !(s = cr_png_write(grid_path, &grid)))
        printf("  %lld panels stacked in %s (%dx%d)\n", (long long)test.count, grid_path, grid.width, grid.height);
    cr_image_free(&grid);
    if (s) {
        fprintf(stderr, "%s: %s\n", p, cr_last_error());
        rc = LAB_EXIT_FAILED;
    } else {
        rc = LAB_EXIT_OK;
    }
done:
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    free(lab);
    free(pred);
    free(rgb);
    cr_tensor_free(&x);
    cr_frames_free(&test);
    cr_st_free(f);
    cr_model_free(&m);
    return lab_finish(&ctx, rc);
}

/* ---- per-layer profile ------------------------------------------------------------------------ */

#define PROF_MAX 256

typedef struct {
    char key[96];
    double fwd_s, bwd_s, flops;
    int count;
} prof_row;

/* Adds (fwd, bwd) seconds and a forward's FLOP to the row named key of rows[0..*n-1], appending it if new. */
static void prof_add(prof_row *rows, int *n, const char *key, double fwd, double bwd, double flops)
{
    int i = 0;
    while (i < *n && strcmp(rows[i].key, key) != 0) i++;
    if (i == *n) {
        if (*n == PROF_MAX) return;
        memset(&rows[i], 0, sizeof rows[i]);
        snprintf(rows[i].key, sizeof rows[i].key, "%s", key);
        (*n)++;
    }
    rows[i].fwd_s += fwd;
    rows[i].bwd_s += bwd;
    rows[i].flops += flops;
    rows[i].count++;
}

static int prof_cmp(const void *a, const void *b)
{
    const prof_row *x = a, *y = b;
    const double u = x->fwd_s + x->bwd_s, v = y->fwd_s + y->bwd_s;
    return (u < v) - (u > v);
}

/* Where a profile finds each module's output shape and each conv's path: the CPU model
 * (NULL: cr_module.out) or the device's (lab 8 --device cuda). */
typedef struct {
    int64_t (*out)[4];          /* per module: N, C, H, W */
    const char **path;          /* per module: the conv's path, or NULL */
} prof_shapes;

/* Prints m's profile per layer kind and per conv shape (ms per call of the model, from
 * `calls` model runs); shapes NULL: from the CPU model's outputs. */
static void print_profile(const cr_model *m, int calls, const char *what, int batch,
                          const prof_shapes *shapes)
{
    static prof_row kinds[PROF_MAX], convs[PROF_MAX];
    int nk = 0, nc = 0;
    double total = 0;
    for (int i = 0; i < m->n; i++) {
        const cr_module *d = &m->mods[i];
        const double f = d->fwd_s / calls, b = d->bwd_s / calls;
        char key[96];
        snprintf(key, sizeof key, "%s", cr_module_kind_name(d->kind));
        if (d->kind == CR_MOD_UPSAMPLE)
            snprintf(key, sizeof key, "upsample %s", d->up.mode == CR_UPSAMPLE_NEAREST ? "nearest" : "bilinear");
        prof_add(kinds, &nk, key, f, b, 0);
        total += f + b;
        if (d->kind == CR_MOD_CONV && (shapes || d->out.ndim == 4)) {
            const cr_conv_params *p = &d->conv;
            const int64_t *o = shapes ? shapes->out[i] : d->out.shape;
            const double numel = (double)o[0] * (double)o[1] * (double)o[2] * (double)o[3];
            snprintf(key, sizeof key, "%lldx%lld/%lld g%lld %lld->%lld out %lldx%lld%s%s",
                     (long long)p->kernel_h, (long long)p->kernel_w, (long long)p->stride_h,
                     (long long)p->groups, (long long)p->in_channels, (long long)p->out_channels,
                     (long long)o[2], (long long)o[3], shapes && shapes->path[i] ? " " : "",
                     shapes && shapes->path[i] ? shapes->path[i] : "");
            const double flops = 2.0 * numel * (double)(p->in_channels / p->groups) *
                                 (double)(p->kernel_h * p->kernel_w);
            prof_add(convs, &nc, key, f, b, flops);
        }
    }
    qsort(kinds, (size_t)nk, sizeof *kinds, prof_cmp);
    qsort(convs, (size_t)nc, sizeof *convs, prof_cmp);
    printf("  profile (%s, batch %d, ms per run, mean of %d runs; total %.1f ms)\n", what, batch,
           calls, total * 1e3);
    if (strcmp(what, "inference") == 0)
        printf("    (evaluation: a BatchNorm is applied in the pass of the ReLU or add after it, "
               "and counted there)\n");
    printf("    %-44s %5s %10s %10s %6s\n", "layer kind", "count", "forward", "backward", "share");
    for (int i = 0; i < nk; i++) {
        printf("    %-44s %5d %10.2f %10.2f %5.1f%%\n", kinds[i].key, kinds[i].count,
               kinds[i].fwd_s * 1e3, kinds[i].bwd_s * 1e3,
               100 * (kinds[i].fwd_s + kinds[i].bwd_s) / (total > 0 ? total : 1));
    }
    printf("    %-44s %5s %10s %10s %6s %8s\n", "conv shape (k/stride groups, channels, output)",
           "count", "forward", "backward", "share", "fwd GF/s");
    for (int i = 0; i < nc; i++)
        printf("    %-44s %5d %10.2f %10.2f %5.1f%% %8.1f\n", convs[i].key, convs[i].count,
               convs[i].fwd_s * 1e3, convs[i].bwd_s * 1e3,
               100 * (convs[i].fwd_s + convs[i].bwd_s) / (total > 0 ? total : 1),
               convs[i].fwd_s > 0 ? convs[i].flops / convs[i].fwd_s / 1e9 : 0.0);
}

/* ---- latency -------------------------------------------------------------------------------- */

/* CPU seconds used by the whole process (every thread) so far: on a shared machine the
 * work done, where wall time also counts the time other processes held the cores. */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Runs PyTorch's benchmark and appends its rows; prints why when it cannot. */
static void pytorch_latency(lab_ctx *ctx, const char *sizes, const char *batches)
{
    /* the script beside the sources (the build knows where), else relative to the cwd */
    const char *script = CR_BENCH_SCRIPT;
    struct stat sb;
    if (stat(script, &sb) != 0) script = "reference/bench_fpn_pytorch.py";
    if (strchr(script, '\'') || stat(script, &sb) != 0) {
        printf("  PyTorch: not measured (reference/bench_fpn_pytorch.py not found)\n");
        return;
    }
    if (system("/usr/bin/python3 -c 'import torch, torchvision' >/dev/null 2>&1") != 0) {
        printf("  PyTorch: not measured (/usr/bin/python3 cannot import torch and torchvision)\n");
        return;
    }
    const char *waits[2] = {"PASSIVE", "ACTIVE"};
    const int nw = ctx->threads == 2 ? 2 : 1;
    char best[32][512];
    double best_ms[32], best_cpu[32], best_min[32];
    int nb = 0;
    for (int w = 0; w < nw; w++) {
        char cmd[1024];
        snprintf(cmd, sizeof cmd, "%s/usr/bin/python3 '%s' latency --batches %s "
                 "--size %s --repeats %d --threads %d --classes %d%s",
                 nw == 2 ? (w ? "OMP_WAIT_POLICY=ACTIVE " : "OMP_WAIT_POLICY=PASSIVE ") : "",
                 script, batches, sizes, ctx->repeats, ctx->threads, classes, ctx->quick ? " --quick" : "");
        FILE *pp = popen(cmd, "r");
        if (!pp) break;
        char line[512];
        int i = 0, better = 0;
        while (fgets(line, sizeof line, pp) && i < 32) {
            int b;
            double mean, med, cms, mn;
            if (sscanf(line, "cpu_min,%d,%lf,%lf", &b, &cms, &mn) == 3 && i > 0) {
                if (better) {
                    best_cpu[i - 1] = cms;
                    best_min[i - 1] = mn;
                }
                continue;
            }
            if (sscanf(line, "%d,cpu,fp32,%lf,%lf", &b, &mean, &med) != 3) continue;
            line[strcspn(line, "\n")] = 0;
            better = w == 0 || med < best_ms[i];
            if (better) {
                snprintf(best[i], sizeof best[i], "%s", line);
                best_ms[i] = med;
                best_cpu[i] = best_min[i] = -1;
            }
            i++;
        }
        const int st = pclose(pp);
        if (st != 0) {
            printf("  PyTorch (OMP_WAIT_POLICY=%s): the benchmark failed (status %d)\n", waits[w], st);
            if (w == 0) return;
        }
        nb = i > nb ? i : nb;
    }
    for (int i = 0; i < nb; i++) {
        double v[6];
        int b;
        sscanf(best[i], "%d,cpu,fp32,%lf,%lf,%lf,%lf,%lf", &b, &v[0], &v[1], &v[2], &v[3], &v[4]);
        printf("  %5d %-8s %9.1f %9.1f %9.1f %9.1f %9.2f %10.0f %9.1f\n", b, "pytorch", v[0], v[1],
               best_min[i], v[2], v[3], v[4], best_cpu[i]);
        lab_csv_row(ctx, "%s", best[i]);
    }
    if (nw == 2) printf("  (PyTorch: the faster of OMP_WAIT_POLICY=PASSIVE and ACTIVE per batch)\n");
}

#ifdef CR_HAVE_CUDA
/* Parses --precisions (a comma list of fp32, tf32, fp16, bf16) into ps[0..*n-1]; 0 on a
 * bad list (the message printed). */
static int parse_precisions(const char *program, const char *list, cr_cuda_precision *ps, int *n)
{
    *n = 0;
    const char *q = list;
    while (*q) {
        const size_t len = strcspn(q, ",");
        int found = -1;
        for (int p = CR_CUDA_FP32; p <= CR_CUDA_BF16; p++)
            if (strlen(cr_cuda_precision_name((cr_cuda_precision)p)) == len &&
                strncmp(q, cr_cuda_precision_name((cr_cuda_precision)p), len) == 0) found = p;
        for (int k = 0; k < *n; k++)
            if (ps[k] == (cr_cuda_precision)found) found = -1;   /* named twice */
        if (found < 0 || *n == 4) {
            fprintf(stderr, "%s: --precisions: expected a comma list of fp32, tf32, fp16, bf16 "
                    "(each at most once), got '%s'\n", program, list);
            return 0;
        }
        ps[(*n)++] = (cr_cuda_precision)found;
        q += len + (q[len] == ',');
    }
    if (*n == 0) fprintf(stderr, "%s: --precisions: the list is empty\n", program);
    return *n > 0;
}

/* Prints the GPU profile of the last runs: the device model's output shapes, and the path
 * each convolution took at precision prec (cr_cuda_conv2d_path_at). */
static cr_status profile_cuda(lab_ctx *ctx, const cr_model *m, const cr_cuda_model *g,
                              cr_cuda_nchw in, cr_cuda_precision prec, const char *pname, int batch)
{
    prof_shapes ps = {calloc((size_t)m->n, sizeof *ps.out), calloc((size_t)m->n, sizeof *ps.path)};
    cr_status s = ps.out && ps.path ? CR_OK : cr_fail(CR_ENOMEM, "profile: out of memory");
    for (int i = 0; i < m->n && !s; i++) {
        const cr_cuda_nchw o = cr_cuda_model_shape(g, i);
        ps.out[i][0] = o.n, ps.out[i][1] = o.c, ps.out[i][2] = o.h, ps.out[i][3] = o.w;
        if (m->mods[i].kind != CR_MOD_CONV) continue;
        const cr_cuda_nchw x = m->mods[i].in == CR_MODEL_INPUT ? in : cr_cuda_model_shape(g, m->mods[i].in);
        cr_conv_shape cs;
        s = cr_conv_shape_init(&cs, &m->mods[i].conv, x.n, x.h, x.w);
        if (!s) ps.path[i] = cr_cuda_conv2d_path_at(&cs, prec);
    }
    if (!s) {
        char what[64];
        snprintf(what, sizeof what, "inference on the GPU, %s", pname);
        print_profile(m, ctx->repeats, what, batch, &ps);
    }
    free(ps.out);
    free(ps.path);
    return s;
}

// @snippet lab08_latency_cuda
/* --device cuda: the same sweep on the GPU through chapter 5 (cr_cuda_model, at each
 * precision of --precisions: cr_cuda_model_set_precision). Each timed run is one forward
 * on an input already in device memory, from launch to cr_cuda_sync, timed on the host
 * clock. Peak memory is the device memory the run holds: the model's parameters and
 * activation pool (its peak), the convolution scratch buffer and the input. --profile:
 * after the timed runs, as many runs again with every module synchronised and timed.
 * Rows: device=cuda. */
static cr_status latency_cuda(lab_ctx *ctx, cr_model *m, const int *bs, int nb, int64_t H,
                              int64_t W, cr_rng *rng, const cr_cuda_precision *ps, int np)
{
    cr_status s = CR_OK;
    for (int k = 0; k < np && !s; k++) {
      const char *pname = cr_cuda_precision_name(ps[k]);
      for (int i = 0; i < nb && !s; i++) {
        /* a fresh device model and scratch buffer per row: each row's memory is its own */
        cr_cuda_model *g = NULL;
        cr_cuda_workspace_release();
        if ((s = cr_cuda_model_create(m, &g)) || (s = cr_cuda_model_set_precision(g, ps[k]))) {
            cr_cuda_model_free(g);
            break;
        }
        cr_tensor x = {0};
        float *dx = NULL;
        const float *dy;
        cr_cuda_nchw in = {bs[i], 3, H, W}, out;
        double t[1000];
        s = cr_tensor_alloc4(&x, bs[i], 3, H, W);
        if (!s) cr_tensor_fill_uniform(&x, rng, -2, 2);
        if (!s) s = cr_cuda_malloc((void **)&dx, x.numel * sizeof(float), "the input");
        if (!s) s = cr_cuda_to_device(dx, x.data, x.numel * sizeof(float));
        cr_tensor_free(&x);
        if (!s) s = cr_cuda_model_forward(g, dx, in, &dy, &out);   /* warm-up */
        if (!s) s = cr_cuda_sync("the FPN's forward (warm-up)");
        for (int r = 0; r < ctx->repeats && !s; r++) {
            const double t0 = cr_now();
            s = cr_cuda_model_forward(g, dx, in, &dy, &out);
            if (!s) s = cr_cuda_sync("the FPN's forward");
            t[r] = (cr_now() - t0) * 1e3;
        }
        const double mib = (double)(cr_cuda_model_bytes(g) + cr_cuda_workspace_bytes() +
                                    (size_t)bs[i] * 3 * (size_t)(H * W) * sizeof(float)) / (1024.0 * 1024.0);
        if (!s && profile) {
            cr_model_profile_reset(m);
            m->profile = true;
            for (int r = 0; r < ctx->repeats && !s; r++) s = cr_cuda_model_forward(g, dx, in, &dy, &out);
            m->profile = false;
            if (!s) s = profile_cuda(ctx, m, g, in, ps[k], pname, bs[i]);
        }
        cr_cuda_free(dx);
        cr_cuda_model_free(g);
        if (s) break;
        const int R = ctx->repeats;
        double sum = 0;
        for (int r = 0; r < R; r++) sum += t[r];
        double med, p90;
        lab_median_p90(t, R, &med, &p90);   /* sorts t: t[0] is the fastest */
        const double mean = sum / R;
        printf("  %5d gpu/%-4s %9.2f %9.2f %9.2f %9.2f %9.1f %10.0f %9s\n", bs[i], pname, mean, med,
               t[0], p90, bs[i] * 1e3 / mean, mib, "-");
        fflush(stdout);
        lab_csv_row(ctx, "%d,cuda,%s,%.3f,%.3f,%.3f,%.3f,%.1f,ours,%d", bs[i], pname, mean, med,
                    p90, bs[i] * 1e3 / mean, mib, ctx->threads);
      }
    }
    cr_cuda_workspace_release();
    return s;
}
// @end lab08_latency_cuda
#endif

/* --device cuda's checks (latency and step): LAB_RUN when this build has chapter 5's
 * kernels and a GPU answers, else the message and the exit code (usage without nvcc at
 * build time, failure without a GPU). */
static int cuda_usable(const lab_ctx *ctx)
{
#ifdef CR_HAVE_CUDA
    if (!cr_cuda_available()) {
        fprintf(stderr, "%s: --device cuda: no usable GPU (%s)\n", ctx->program, cr_cuda_unavailable_reason());
        return LAB_EXIT_FAILED;
    }
    return LAB_RUN;
#else
    fprintf(stderr, "%s: --device cuda: this lab08-fpn was built without CUDA (it needs nvcc at "
            "configure time: meson setup -Dcuda=enabled)\n", ctx->program);
    return LAB_EXIT_USAGE;
#endif
}

static int cmd_latency(int argc, char **argv)
{
    lab_ctx ctx;
    int rc = lab_init(&ctx, argc, argv, "lab08-fpn latency",
                      "Chapter 8: forward latency (evaluation mode) of the full FPN + ResNeXt-50 "
                      "per batch size, ours and PyTorch's.", latency_args, LAB_COUNT(latency_args));
    if (rc != LAB_RUN) return rc;
    int64_t H, W;
    int bs[32];
    const int quick_default = ctx.quick && strcmp(batches_str, "1,2,4,8,16,32,64") == 0;
    if (quick_default) batches_str = "1,2";
    if (ctx.quick && strcmp(size_str, "384x480") == 0) size_str = "64x96";
    const int nb = lab_parse_batches(batches_str, bs, 32, 1024);
    if (!nb) {
        fprintf(stderr, "%s: --batches: expected a comma list of sizes 1..1024 (at most 32), got '%s'\n",
                ctx.program, batches_str);
        return LAB_EXIT_USAGE;
    }
    if (!lab_parse_fpn_size(ctx.program, "size", size_str, &H, &W)) return LAB_EXIT_USAGE;
    const int on_gpu = strcmp(device_str, "cuda") == 0;
    if (!on_gpu && strcmp(device_str, "cpu") != 0) {
        fprintf(stderr, "%s: --device: expected cpu or cuda, got '%s'\n", ctx.program, device_str);
        return LAB_EXIT_USAGE;
    }
    if (!on_gpu && strcmp(precisions_str, "fp32") != 0) {
        fprintf(stderr, "%s: --precisions: only with --device cuda (the CPU forward is fp32; "
                "chapter 7's lab measures int8, bf16 and fp16), got '%s'\n", ctx.program, precisions_str);
        return LAB_EXIT_USAGE;
    }
#ifdef CR_HAVE_CUDA
    cr_cuda_precision precs[4];
    int nprec = 0;
    if (on_gpu && !parse_precisions(ctx.program, precisions_str, precs, &nprec)) return LAB_EXIT_USAGE;
#endif
    if (on_gpu && (rc = cuda_usable(&ctx)) != LAB_RUN) return rc;
    cr_model m;
    cr_status s = build_net(&m, 0);
    if (!s) s = cr_model_init_params(&m, 1);
    if (s) {
        fprintf(stderr, "%s: %s\n", ctx.program, cr_last_error());
        cr_model_free(&m);
        return LAB_EXIT_FAILED;
    }
    cr_model_train(&m, false);
    lab_banner(&ctx, "chapter 8, FPN + ResNeXt-50 32x4d: forward latency");
    const char *const extra[] = {"peak_memory_mib", on_gpu
                                 ? "device memory the runs hold: the model's parameters, its "
                                   "activation pool (peak), the convolution scratch buffer, the input"
                                 : "resident high-water mark (VmHWM) of the process during the batch "
                                   "size's runs, reset before each",
                                 "size", size_str, NULL};
    if (lab_csv_begin(&ctx, latency_columns, extra) != CR_OK) {
        fprintf(stderr, "%s: %s\n", ctx.program, cr_last_error());
        cr_model_free(&m);
        return LAB_EXIT_FAILED;
    }
    char policy[64];
    lab_wait_policy_str(policy, sizeof policy);
    lab_csv_comment(&ctx, "wait_policy", policy);
    printf("  ours: OMP_WAIT_POLICY=%s\n", policy);
    if (on_gpu)
        printf("  input %lldx%lld, %d timed runs per batch size after one warm-up; peak MiB: the "
               "device memory the runs hold (parameters, activation pool, scratch, input)\n",
               (long long)H, (long long)W, ctx.repeats);
    else
        printf("  input %lldx%lld, %d timed runs per batch size after one warm-up; peak memory: the "
               "resident high-water mark (VmHWM); cpu ms: the median CPU time of the process per run "
               "(all threads)\n", (long long)H, (long long)W, ctx.repeats);
    printf("  %5s %-8s %9s %9s %9s %9s %9s %10s %9s\n", "batch", "impl", "mean ms", "median", "min",
           "p90", "img/s", "peak MiB", "cpu ms");
    cr_rng rng;
    cr_rng_seed(&rng, ctx.seed);
    int hwm_ok = 1;
#ifdef CR_HAVE_CUDA
    if (on_gpu) s = latency_cuda(&ctx, &m, bs, nb, H, W, &rng, precs, nprec);
#endif
    for (int i = 0; i < nb && !s && !on_gpu; i++) {
        cr_tensor x = {0};
        const cr_tensor *y;
        double t[1000], cpu[1000];
        hwm_ok &= lab_reset_hwm();
        if ((s = cr_tensor_alloc4(&x, bs[i], 3, H, W))) break;
        cr_tensor_fill_uniform(&x, &rng, -2, 2);
        s = cr_model_forward(&m, &x, &y);   /* warm-up */
        cr_model_profile_reset(&m);
        m.profile = profile;
        for (int r = 0; r < ctx.repeats && !s; r++) {
            const double t0 = cr_now(), c0 = cpu_now();
            s = cr_model_forward(&m, &x, &y);
            t[r] = (cr_now() - t0) * 1e3;
            cpu[r] = (cpu_now() - c0) * 1e3;
        }
        cr_tensor_free(&x);
        if (s) break;
        double sum = 0;
        for (int r = 0; r < ctx.repeats; r++) sum += t[r];
        const int R = ctx.repeats;
        double med, p90;
        lab_median_p90(t, R, &med, &p90);   /* sorts t: t[0] is the fastest */
        qsort(cpu, (size_t)R, sizeof *cpu, lab_cmp_double);
        const double mean = sum / R, mib = hwm_ok ? lab_vm_hwm_mib() : -1;
        printf("  %5d %-8s %9.1f %9.1f %9.1f %9.1f %9.2f %10.0f %9.1f\n", bs[i], "ours", mean, med,
               t[0], p90, bs[i] * 1e3 / mean, mib, cpu[R / 2]);
        fflush(stdout);
        lab_csv_row(&ctx, "%d,cpu,fp32,%.3f,%.3f,%.3f,%.3f,%.1f,ours,%d", bs[i], mean, med, p90,
                    bs[i] * 1e3 / mean, mib, ctx.threads);
        if (profile) print_profile(&m, ctx.repeats, "inference", bs[i], NULL);
        m.profile = false;
    }
    cr_model_free(&m);
    if (s) {
        fprintf(stderr, "%s: %s\n", ctx.program, cr_last_error());
        return lab_finish(&ctx, LAB_EXIT_FAILED);
    }
    if (!hwm_ok) printf("  (peak memory: /proc/self/clear_refs not writable, VmHWM is the run's peak so far)\n");
    if (on_gpu) printf("  PyTorch on the GPU: reference/bench_fpn_gpu.py (scripts/gpu-check.sh runs it)\n");
    else if (ours_only) printf("  PyTorch: not measured (--ours-only)\n");
    else pytorch_latency(&ctx, size_str, batches_str);
    return lab_finish(&ctx, LAB_EXIT_OK);
}

/* ---- training step -------------------------------------------------------------------------- */

/* The network of `step --net block`: torchvision's resnext50_32x4d layer2.0 exactly as chapter
 * 8's encoder builds it (fpn.c), on an empty m: a Bottleneck 256 -> 512 channels, 3x3 width
 * 256 in 32 groups, stride 2, with its downsample (1x1 conv stride 2 - BN). Input N x 256 x
 * S x S, output N x 512 x ceil(S/2) x ceil(S/2). */
static cr_status build_block(cr_model *m)
{
    const cr_fpn_config c = cr_fpn_config_resnext50(CR_CAMVID_CLASSES);
    const int64_t width = c.planes[1] * c.width_per_group / 64 * c.groups;   /* 256 */
    cr_model_init(m);
    return cr_model_add_bottleneck(m, "encoder.layer2.0", CR_MODEL_INPUT, 4 * c.planes[0], width,
                                   4 * c.planes[1], c.groups, 2, true) < 0 ? cr_last_status() : CR_OK;
}

/* The step's network (random init, seed 1): fpn (full, or reduced with --quick), block or
 * lab4 (chapter 4's cr_model_build_fcn, `classes` outputs). */
static cr_status build_step_net(cr_model *m, step_net net, int quick)
{
    cr_status s = net == NET_FPN ? build_net(m, quick)
                : net == NET_BLOCK ? build_block(m) : cr_model_build_fcn(m, classes);
    return s ? s : cr_model_init_params(m, 1);
}

/* The step's input shape (N x C x H x W) for net at the resolved crop. */
static void step_input_shape(step_net net, int64_t shape[4])
{
    shape[0] = batch_size;
    shape[1] = net == NET_BLOCK ? 256 : 3;
    shape[2] = net == NET_LAB4 ? LAB4_H : net == NET_BLOCK ? crop / 4 : crop;
    shape[3] = net == NET_LAB4 ? LAB4_W : net == NET_BLOCK ? crop / 4 : crop;
}

/* The CSV's crop field: the image side (fpn: the crop; block: the image whose 1/4 is the
 * block's input; lab4: its frames, HxW). */
static const char *step_crop_field(step_net net, char buf[32])
{
    if (net == NET_LAB4) snprintf(buf, 32, "%dx%d", LAB4_H, LAB4_W);
    else snprintf(buf, 32, "%d", crop);
    return buf;
}

/* PyTorch's median step time in seconds for the same step (reference/bench_fpn_pytorch.py
 * step --net NET), the faster of both OpenMP wait policies at 2 threads, each a CSV row; -1
 * when not measured. */
static double pytorch_step(lab_ctx *ctx, step_net net)
{
    const char *script = CR_BENCH_SCRIPT;
    struct stat sb;
    if (stat(script, &sb) != 0) script = "reference/bench_fpn_pytorch.py";
    if (strchr(script, '\'') || stat(script, &sb) != 0 ||
        system("/usr/bin/python3 -c 'import torch, torchvision' >/dev/null 2>&1") != 0) {
        printf("  PyTorch: not measured (no /usr/bin/python3 with torch and torchvision, or no "
               "reference/bench_fpn_pytorch.py)\n");
        return -1;
    }
    double best = -1;
    char cf[32];
    const int nw = ctx->threads == 2 ? 2 : 1;
    for (int w = 0; w < nw; w++) {
        char cmd[1024], line[256];
        snprintf(cmd, sizeof cmd, "%s/usr/bin/python3 '%s' step --net %s --crop %d --size %dx%d "
                 "--batch %d --steps %d --threads %d --classes %d",
                 nw == 2 ? (w ? "OMP_WAIT_POLICY=ACTIVE " : "OMP_WAIT_POLICY=PASSIVE ") : "",
                 script, step_net_names[net], crop, LAB4_H, LAB4_W, batch_size, steps + 1,
                 ctx->threads, classes);
        FILE *pp = popen(cmd, "r");
        if (!pp) break;
        double med = -1, v, u, cpu = -1, mn = -1;
        while (fgets(line, sizeof line, pp)) {
            if (sscanf(line, "step_median,%lf", &v) == 1) med = v;
            if (sscanf(line, "step_cpu_median,%lf,%lf", &v, &u) == 2) {
                cpu = v;
                mn = u;
            }
        }
        pclose(pp);
        printf("  pytorch  OMP_WAIT_POLICY=%-7s median step %.4f s, min %.4f s, median CPU %.4f s\n",
               w ? "ACTIVE" : "PASSIVE", med, mn, cpu);
        if (med > 0)
            lab_csv_row(ctx, "pytorch,%s,%d,%s,%d,%d,%.4f,%.4f,%.4f,,,,,%s",
                        nw == 2 ? (w ? "active" : "passive") : "default", batch_size,
                        step_crop_field(net, cf), ctx->threads, steps, med, mn, cpu,
                        step_net_names[net]);
        if (med > 0 && (best < 0 || med < best)) best = med;
    }
    return best;
}

/* The block's loss, mean(y^2) over y's numel elements (no labels needed), and its gradient
 * 2y/numel into dy (y's shape). */
static double mean_square_loss(const cr_tensor *y, cr_tensor *dy)
{
    const float g = 2.0f / (float)y->numel;
    double acc = 0;
    for (size_t i = 0; i < y->numel; i++) {
        acc += (double)y->data[i] * y->data[i];
        dy->data[i] = g * y->data[i];
    }
    return acc / (double)y->numel;
}

/* One training step as cr_train_step runs it, each phase timed into ph[0..3] (seconds):
 * forward, the loss (cross-entropy on labels, or mean(y^2) when labels is NULL), zero_grad
 * + backward, optimizer. */
static cr_status timed_step(cr_trainer *t, const cr_tensor *x, const int32_t *labels, double ph[4])
{
    cr_model *m = t->model;
    const cr_tensor *y;
    double loss, t0 = cr_now();
    cr_status s = cr_model_forward(m, x, &y);
    ph[0] = cr_now() - t0;
    if (s) return s;
    if (!cr_tensor_same_shape(&t->dlogits, y)) {
        cr_tensor_free(&t->dlogits);
        if ((s = cr_tensor_alloc(&t->dlogits, 4, y->shape))) return s;
    }
    t0 = cr_now();
    if (labels) s = cr_cross_entropy_fast(y, labels, t->cfg.ignore_index, &loss, &t->dlogits);
    else loss = mean_square_loss(y, &t->dlogits);
    ph[1] = cr_now() - t0;
    if (s) return s;
    t0 = cr_now();
    cr_model_zero_grad(m);
    s = cr_model_backward(m, &t->dlogits);
    ph[2] = cr_now() - t0;
    if (s) return s;
    t0 = cr_now();
    s = cr_optim_step(&t->opt, t->params.tensors, (const cr_tensor *const *)t->params.grads);
    ph[3] = cr_now() - t0;
    return s;
}

/* The CSV columns of `step`: one row per implementation (and PyTorch wait policy); the
 * phases (mean seconds per step) are ours only; crop as step_crop_field; net: --net. */
static const char *const step_columns[] = {
    "impl", "policy", "batch", "crop", "threads", "steps", "median_s", "min_s", "cpu_median_s",
    "forward_s", "loss_s", "backward_s", "adamw_s", "net", NULL};

/* Resolves --net into *net and --crop into crop (per network); prints the refusal and
 * returns LAB_EXIT_USAGE, or LAB_RUN. */
static int step_resolve(const lab_ctx *ctx, step_net *net)
{
    int k = 0;
    while (k < NET_COUNT && strcmp(step_net_str, step_net_names[k]) != 0) k++;
    if (k == NET_COUNT) {
        fprintf(stderr, "%s: --net: expected fpn, block or lab4, got '%s'\n", ctx->program,
                step_net_str);
        return LAB_EXIT_USAGE;
    }
    *net = (step_net)k;
    if (*net == NET_LAB4 && step_crop) {
        fprintf(stderr, "%s: --crop: lab4 trains lab 4's %dx%d frames (CamVid at its --factor 4); "
                "--crop is for --net fpn and block\n", ctx->program, LAB4_H, LAB4_W);
        return LAB_EXIT_USAGE;
    }
    crop = step_crop ? step_crop
         : *net == NET_BLOCK ? (ctx->quick ? STEP_CROP_BLOCK_QUICK : STEP_CROP_BLOCK) : STEP_CROP_FPN;
    if (*net == NET_FPN && crop % 32) {
        fprintf(stderr, "%s: --crop: expected a multiple of 32 (the network divides by 32), got %d\n",
                ctx->program, crop);
        return LAB_EXIT_USAGE;
    }
    if (*net == NET_BLOCK && crop % 4) {
        fprintf(stderr, "%s: --crop: expected a multiple of 4 (the block's input is 1/4 of the "
                "image side), got %d\n", ctx->program, crop);
        return LAB_EXIT_USAGE;
    }
    return LAB_RUN;
}

/* Prints what the step trains: network, input x (as allocated) and loss. */
static void step_describe(step_net net, int quick, const cr_tensor *x)
{
    const long long n = x->shape[0], c = x->shape[1], h = x->shape[2], w = x->shape[3];
    if (net == NET_FPN)
        printf("  batch %lld of %lldx%lld crops, %s network, cross-entropy", n, h, w,
               quick ? "reduced" : "full");
    else if (net == NET_BLOCK)
        printf("  batch %lld of %lld x %lld x %lld (layer2's input at a %dx%d image), loss mean(y^2)",
               n, c, h, w, crop, crop);
    else
        printf("  batch %lld of %lld x %lld x %lld (lab 4's CamVid frames), %d classes, cross-entropy",
               n, c, h, w, classes);
    printf(", AdamW; %d timed steps after one warm-up\n", steps);
}

#ifdef CR_HAVE_CUDA
// @snippet lab08_step_cuda
/* step --device cuda: chapter 5's training step (cr_cuda_train_step) on x and labels copied
 * to the device, AdamW as the CPU trainer's (cfg); one warm-up step, then `steps` timed
 * ones, each from launch to the loss back on the host (the step waits for the device).
 * Device memory: the trainer's buffers and the convolutions' scratch. Row impl ours-cuda,
 * without the CPU's phase columns. */
static cr_status step_cuda(lab_ctx *ctx, cr_model *m, step_net net, const cr_optim_config *cfg,
                           const cr_tensor *x, const int32_t *labels, int32_t ignore)
{
    cr_cuda_trainer *g = NULL;
    float *dx = NULL;
    int32_t *dl = NULL;
    double *tot = calloc((size_t)steps, sizeof *tot);
    const size_t npix = (size_t)(x->shape[0] * x->shape[2] * x->shape[3]);
    const cr_cuda_nchw in = {x->shape[0], x->shape[1], x->shape[2], x->shape[3]};
    cr_status s = tot ? cr_cuda_trainer_create(m, cfg, &g) : cr_fail(CR_ENOMEM, "out of memory");
    if (!s) s = cr_cuda_malloc((void **)&dx, x->numel * sizeof(float), "the input");
    if (!s) s = cr_cuda_to_device(dx, x->data, x->numel * sizeof(float));
    if (!s) s = cr_cuda_malloc((void **)&dl, npix * sizeof *dl, "the labels");
    if (!s) s = cr_cuda_to_device(dl, labels, npix * sizeof *dl);
    double loss = 0;
    if (!s) s = cr_cuda_train_step(g, dx, in, dl, ignore, cfg->lr, &loss);   /* warm-up */
    for (int i = 0; i < steps && !s; i++) {
        const double t0 = cr_now();
        s = cr_cuda_train_step(g, dx, in, dl, ignore, cfg->lr, &loss);
        tot[i] = cr_now() - t0;
        if (!s) printf("  ours/gpu step %d: %.4f s (loss %.4f)\n", i + 1, tot[i], loss);
    }
    if (!s) {
        double med;
        char cf[32];
        const double mib = (double)(cr_cuda_trainer_bytes(g) + cr_cuda_workspace_bytes()) / (1024.0 * 1024.0);
        lab_median_p90(tot, steps, &med, NULL);   /* sorts tot: tot[0] is the fastest */
        printf("  ours/gpu median step %.4f s, min %.4f s; device memory %.0f MiB\n", med, tot[0], mib);
        lab_csv_row(ctx, "ours-cuda,-,%d,%s,%d,%d,%.4f,%.4f,,,,,,%s", batch_size,
                    step_crop_field(net, cf), ctx->threads, steps, med, tot[0], step_net_names[net]);
        printf("  PyTorch on the GPU: not measured by this lab\n");
    }
    cr_cuda_free(dx);
    cr_cuda_free(dl);
    cr_cuda_trainer_free(g);
    cr_cuda_workspace_release();
    cr_cuda_layers_release();
    free(tot);
    return s;
}
// @end lab08_step_cuda
#endif

static int cmd_step(int argc, char **argv)
{
    lab_ctx ctx;
    int rc = lab_init(&ctx, argc, argv, "lab08-fpn step",
                      "Chapter 8: time of one training step (forward, loss, backward, AdamW), "
                      "ours and PyTorch's, of the full FPN on random crops (cross-entropy), of "
                      "ResNeXt-50's layer2.0 bottleneck (--net block; loss mean(y^2)) or of lab "
                      "4's FCN (--net lab4; cross-entropy), in training mode.", step_args,
                      LAB_COUNT(step_args));
    if (rc != LAB_RUN) return rc;
    step_net net;
    if ((rc = step_resolve(&ctx, &net)) != LAB_RUN) return rc;
    const int on_gpu = strcmp(device_str, "cuda") == 0;
    if (!on_gpu && strcmp(device_str, "cpu") != 0) {
        fprintf(stderr, "%s: --device: expected cpu or cuda, got '%s'\n", ctx.program, device_str);
        return LAB_EXIT_USAGE;
    }
    if (on_gpu && net == NET_BLOCK) {
        fprintf(stderr, "%s: --device cuda: --net block's loss (mean of y^2) is not on the GPU; "
                "use --net fpn or lab4\n", ctx.program);
        return LAB_EXIT_USAGE;
    }
    if (on_gpu && (rc = cuda_usable(&ctx)) != LAB_RUN) return rc;
    int64_t shape[4];
    step_input_shape(net, shape);
    const size_t npix = (size_t)(shape[0] * shape[2] * shape[3]);
    cr_model m;
    cr_trainer t = {0};
    cr_tensor x = {0};
    int32_t *labels = net == NET_BLOCK ? NULL : malloc(npix * sizeof *labels);
    cr_train_config c = cr_train_config_default();
    c.batch = batch_size;
    c.epochs = 1;
    c.warmup_epochs = 0;
    c.flips = false;
    cr_status s = build_step_net(&m, net, ctx.quick);
    if (!s) s = cr_trainer_init(&t, &m, &c, batch_size, shape[2], shape[3]);
    if (!s) s = cr_tensor_alloc(&x, 4, shape);
    if (!s && net != NET_BLOCK && !labels) s = cr_fail(CR_ENOMEM, "out of memory for the labels");
    if (s) {
        fprintf(stderr, "%s: %s\n", ctx.program, cr_last_error());
        free(labels);
        cr_tensor_free(&x);
        cr_trainer_free(&t);
        cr_model_free(&m);
        return LAB_EXIT_FAILED;
    }
    cr_rng rng;
    cr_rng_seed(&rng, ctx.seed);
    cr_tensor_fill_uniform(&x, &rng, -2, 2);
    for (size_t i = 0; labels && i < npix; i++) labels[i] = (int32_t)cr_rng_int(&rng, 0, classes - 1);
    lab_banner(&ctx, net == NET_FPN ? "chapter 8, FPN + ResNeXt-50 32x4d: training step"
                   : net == NET_BLOCK ? "chapter 8, ResNeXt-50 32x4d layer2.0 bottleneck: training step"
                   : "chapter 4, lab 4's FCN: training step");
    if (lab_csv_begin(&ctx, step_columns, NULL) != CR_OK) {
        fprintf(stderr, "%s: %s\n", ctx.program, cr_last_error());
        free(labels);
        cr_tensor_free(&x);
        cr_trainer_free(&t);
        cr_model_free(&m);
        return lab_finish(&ctx, LAB_EXIT_FAILED);
    }
    char policy[64];
    lab_wait_policy_str(policy, sizeof policy);
    printf("  ours: OMP_WAIT_POLICY=%s\n", policy);
    step_describe(net, ctx.quick, &x);
#ifdef CR_HAVE_CUDA
    if (on_gpu) {
        s = step_cuda(&ctx, &m, net, &t.opt.cfg, &x, labels, c.ignore_index);
        free(labels);
        cr_tensor_free(&x);
        cr_trainer_free(&t);
        cr_model_free(&m);
        if (s) fprintf(stderr, "%s: %s\n", ctx.program, cr_last_error());
        return lab_finish(&ctx, s ? LAB_EXIT_FAILED : LAB_EXIT_OK);
    }
#endif
    double ph[4], sum[4] = {0}, *tot = calloc((size_t)steps, sizeof *tot);
    double *cpu = calloc((size_t)steps, sizeof *cpu);
    s = tot && cpu ? timed_step(&t, &x, labels, ph) : cr_fail(CR_ENOMEM, "out of memory");
    cr_model_profile_reset(&m);
    m.profile = profile;
    for (int i = 0; i < steps && !s; i++) {
        const double c0 = cpu_now();
        s = timed_step(&t, &x, labels, ph);
        cpu[i] = cpu_now() - c0;
        for (int k = 0; k < 4; k++) sum[k] += ph[k];
        tot[i] = ph[0] + ph[1] + ph[2] + ph[3];
        printf("  ours     step %d: %.4f s (forward %.4f, loss %.4f, backward %.4f, AdamW %.4f; "
               "CPU %.4f s)\n", i + 1, tot[i], ph[0], ph[1], ph[2], ph[3], cpu[i]);
        fflush(stdout);
    }
    if (!s) {
        double med;
        char cf[32];
        lab_median_p90(tot, steps, &med, NULL);   /* sorts tot: tot[0] is the fastest */
        qsort(cpu, (size_t)steps, sizeof *cpu, lab_cmp_double);
        printf("  ours     median step %.4f s, min %.4f s, median CPU %.4f s; mean forward %.4f, "
               "loss %.4f, backward %.4f, AdamW %.4f s\n", med, tot[0], cpu[steps / 2],
               sum[0] / steps, sum[1] / steps, sum[2] / steps, sum[3] / steps);
        lab_csv_row(&ctx, "ours,%s,%d,%s,%d,%d,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f,%s",
                    policy, batch_size, step_crop_field(net, cf), ctx.threads, steps,
                    med, tot[0], cpu[steps / 2], sum[0] / steps, sum[1] / steps, sum[2] / steps,
                    sum[3] / steps, step_net_names[net]);
        if (profile) print_profile(&m, steps, "training", batch_size, NULL);
        if (ours_only) printf("  PyTorch: not measured (--ours-only)\n");
        else if (ctx.quick && net == NET_FPN)   /* PyTorch's script builds the full FPN only */
            printf("  PyTorch: not run with --quick (ours ran the reduced network; the ratio "
                   "would compare different networks)\n");
        else {
            const double pt = pytorch_step(&ctx, net);
            if (pt > 0) printf("  ours / PyTorch step time: %.2f\n", med / pt);
        }
    }
    free(tot);
    free(cpu);
    free(labels);
    cr_tensor_free(&x);
    cr_trainer_free(&t);
    cr_model_free(&m);
    if (s) {
        fprintf(stderr, "%s: %s\n", ctx.program, cr_last_error());
        return lab_finish(&ctx, LAB_EXIT_FAILED);
    }
    return lab_finish(&ctx, LAB_EXIT_OK);
}

/* ---- main ----------------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f, "usage: lab08-fpn train|predict|latency|step [options]   (lab08-fpn COMMAND --help)\n"
               "  train    trains the FPN on CamVid (--data DIR)\n"
               "  predict  colour masks and panels from weights (--weights W --images DIR --out DIR)\n"
               "  latency  forward latency of the full FPN per batch size, ours and PyTorch's\n"
               "  step     time of one training step (--net fpn, block or lab4), ours and PyTorch's\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return LAB_EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(stdout);
        return LAB_EXIT_OK;
    }
    if (strcmp(argv[1], "train") == 0) return cmd_train(argc - 1, argv + 1);
    if (strcmp(argv[1], "predict") == 0) return cmd_predict(argc - 1, argv + 1);
    if (strcmp(argv[1], "latency") == 0 || strcmp(argv[1], "step") == 0) lab_timing_wait_policy(argv);
    if (strcmp(argv[1], "latency") == 0) return cmd_latency(argc - 1, argv + 1);
    if (strcmp(argv[1], "step") == 0) return cmd_step(argc - 1, argv + 1);
    fprintf(stderr, "lab08-fpn: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return LAB_EXIT_USAGE;
}
