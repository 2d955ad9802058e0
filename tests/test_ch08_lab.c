/* test_ch08_lab.c — suite ch08: chapter 8's training module (train8.h) and lab 8's
 * command line.
 *
 * The palette against SegNet's CamVid colours, written here from its published table;
 * the panel layout (image | truth | prediction); evaluation batches turned back into
 * bytes give the frame; the crop-batch epoch on tiny synthetic data with a reduced FPN:
 * the loss goes down, the same seed gives the same bits, and a checkpoint after one
 * epoch resumes to the same bits as an uninterrupted run. With the built lab as argv[1]:
 * its refusals (exit code 2 and a message naming the option), the latency CSV's
 * columns, and the panels `predict --grid` stacks from a synthetic CamVid folder. Random inputs print their seed (CR_SEED replays). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "augment.h"
#include "cr_test.h"
#include "fpn.h"
#include "png_io.h"
#include "rng.h"
#include "train.h"
#include "train8.h"

static const char *lab_path;   /* argv[1]: the built lab08-fpn */

/* A seeded stream, its seed printed. */
static void seeded(cr_rng *r, const char *what)
{
    const uint64_t seed = cr_seed_from_env();
    printf("%s: seed %llu (CR_SEED replays)\n", what, (unsigned long long)seed);
    cr_rng_seed(r, seed);
}

/* SegNet's CamVid colours for a few classes, and void (11 and the ignore label) black. */
static void palette__camvid_colours(void **state)
{
    (void)state;
    static const struct { int32_t c; uint8_t rgb[3]; } want[] = {
        {0, {128, 128, 128}}, {1, {128, 0, 0}}, {3, {128, 64, 128}}, {4, {60, 40, 222}},
        {8, {64, 0, 128}}, {10, {0, 128, 192}}, {11, {0, 0, 0}}, {CR_CAMVID_IGNORE, {0, 0, 0}}};
    const int n = (int)(sizeof want / sizeof *want);
    int32_t labels[8];
    for (int i = 0; i < n; i++) labels[i] = want[i].c;
    cr_image img;
    assert_cr_ok(cr_camvid_colorize(labels, 2, 4, &img));
    assert_int_equal(img.width, 4);
    assert_int_equal(img.height, 2);
    assert_int_equal(img.channels, 3);
    for (int i = 0; i < n; i++)
        if (memcmp(img.pixels + 3 * i, want[i].rgb, 3) != 0)
            fail_msg("class %d: got %d,%d,%d", want[i].c, img.pixels[3 * i], img.pixels[3 * i + 1],
                     img.pixels[3 * i + 2]);
    cr_image_free(&img);
    /* every class a different colour */
    for (int a = 0; a < 12; a++)
        for (int b = a + 1; b < 12; b++)
            assert_memory_not_equal(cr_camvid_palette[a], cr_camvid_palette[b], 3);
    int32_t bad[2] = {3, 12};
    assert_cr_fails(cr_camvid_colorize(bad, 1, 2, &img), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "12"));
    bad[1] = -1;
    assert_cr_fails(cr_camvid_colorize(bad, 1, 2, &img), CR_EINVAL);
}

/* A panel of a random frame is 3w x h: image, truth coloured, prediction coloured. */
static void panel__layout(void **state)
{
    (void)state;
    cr_rng r;
    seeded(&r, "panel__layout");
    const int64_t h = 7, w = 13;
    uint8_t rgb[7 * 13 * 3];
    int32_t truth[7 * 13], pred[7 * 13];
    for (int i = 0; i < h * w * 3; i++) rgb[i] = (uint8_t)cr_rng_int(&r, 0, 255);
    for (int i = 0; i < h * w; i++) {
        truth[i] = (int32_t)cr_rng_int(&r, 0, 11);
        if (truth[i] == 11 && i % 2) truth[i] = CR_CAMVID_IGNORE;
        pred[i] = (int32_t)cr_rng_int(&r, 0, 10);
    }
    cr_image p;
    assert_cr_ok(cr_fpn_panel(rgb, truth, pred, h, w, &p));
    assert_int_equal(p.width, 3 * w);
    assert_int_equal(p.height, h);
    for (int64_t y = 0; y < h; y++)
        for (int64_t x = 0; x < w; x++) {
            const uint8_t *row = p.pixels + y * 9 * w;
            int32_t t = truth[y * w + x];
            if (t == CR_CAMVID_IGNORE) t = 11;
            if (memcmp(row + 3 * x, rgb + 3 * (y * w + x), 3) != 0)
                fail_msg("left third differs from the image at %lld,%lld", (long long)y, (long long)x);
            if (memcmp(row + 3 * (w + x), cr_camvid_palette[t], 3) != 0)
                fail_msg("middle third is not the truth's colour at %lld,%lld", (long long)y, (long long)x);
            if (memcmp(row + 3 * (2 * w + x), cr_camvid_palette[pred[y * w + x]], 3) != 0)
                fail_msg("right third is not the prediction's colour at %lld,%lld", (long long)y, (long long)x);
        }
    cr_image_free(&p);
    pred[5] = 11 + 2;
    assert_cr_fails(cr_fpn_panel(rgb, truth, pred, h, w, &p), CR_EINVAL);
}

/* Synthetic frames: random colours, label = which of three colour ranges the red channel
 * falls in (a rule a network can learn), some void. */
static void make_frames(cr_frames *fr, int64_t count, int64_t h, int64_t w, cr_rng *r)
{
    memset(fr, 0, sizeof *fr);
    fr->count = count;
    fr->height = fr->full_height = h;
    fr->width = fr->full_width = w;
    fr->factor = 1;
    fr->rgb = malloc((size_t)(count * h * w * 3));
    fr->labels = malloc((size_t)(count * h * w));
    fr->names = calloc((size_t)count, sizeof *fr->names);
    assert_non_null(fr->rgb);
    assert_non_null(fr->labels);
    assert_non_null(fr->names);
    for (int64_t i = 0; i < count; i++) {
        fr->names[i] = strdup("synthetic.png");
        /* blocks of 8 x 8 pixels of one colour, so the class has spatial extent */
        for (int64_t by = 0; by < h; by += 8)
            for (int64_t bx = 0; bx < w; bx += 8) {
                const int c = (int)cr_rng_int(r, 0, 2);
                const uint8_t red = (uint8_t)(c * 100 + cr_rng_int(r, 0, 40));
                const uint8_t lab = cr_rng_int(r, 0, 19) == 0 ? CR_CAMVID_VOID : (uint8_t)c;
                for (int64_t y = by; y < by + 8 && y < h; y++)
                    for (int64_t x = bx; x < bx + 8 && x < w; x++) {
                        uint8_t *px = fr->rgb + ((i * h + y) * w + x) * 3;
                        px[0] = red;
                        px[1] = (uint8_t)cr_rng_int(r, 0, 255);
                        px[2] = 90;
                        fr->labels[(i * h + y) * w + x] = lab;
                    }
            }
    }
}

/* The golden tests' reduced FPN with 3 classes, initialised from seed, dropout off. */
static void build_reduced(cr_model *m, uint64_t seed)
{
    const cr_fpn_config c = {.classes = 3, .stem = 8, .planes = {4, 8, 16, 32},
                             .blocks = {1, 2, 1, 1}, .groups = 4, .width_per_group = 16,
                             .pyramid = 16, .segmentation = 32, .dropout = 0.0};
    cr_model_init(m);
    assert_cr_ok(cr_fpn_build(m, &c));
    assert_cr_ok(cr_model_init_params(m, seed));
}

static cr_train_config tiny_config(int epochs)
{
    cr_train_config c = cr_train_config_default();
    c.lr = 3e-3;
    c.weight_decay = 1e-4;
    c.batch = 4;
    c.epochs = epochs;
    c.warmup_epochs = 0;
    c.seed = 5;
    c.flips = false;
    c.ignore_index = CR_CAMVID_IGNORE;
    return c;
}

/* Trains a fresh reduced FPN for `epochs` (of `total`) epochs; returns the epochs' mean losses. */
static void train_tiny(cr_model *m, cr_trainer *t, const cr_frames *fr, int epochs, int total,
                       double *losses)
{
    cr_augment a;
    cr_augment_default(&a, 32);
    build_reduced(m, 11);
    const cr_train_config c = tiny_config(total);
    assert_cr_ok(cr_trainer_init(t, m, &c, fr->count, 32, 32));
    for (int e = 0; e < epochs; e++) assert_cr_ok(cr_fpn_train_epoch(t, fr, &a, NULL, NULL, &losses[e]));
}

/* Fails unless two models hold the same bits in every state-dict tensor. */
static void expect_same_bits(cr_model *a, cr_model *b)
{
    cr_tensor_list la, lb;
    assert_cr_ok(cr_model_state_list(a, &la));
    assert_cr_ok(cr_model_state_list(b, &lb));
    assert_int_equal(la.n, lb.n);
    for (int i = 0; i < la.n; i++)
        if (memcmp(la.tensors[i]->data, lb.tensors[i]->data, la.tensors[i]->numel * sizeof(float)))
            fail_msg("%s differs", la.names[i]);
    cr_tensor_list_free(&la);
    cr_tensor_list_free(&lb);
}

/* The loss goes down over a few epochs of augmented crops; the same seed gives the same
 * bits; one epoch + checkpoint + resume gives the bits of the uninterrupted run. */
static void epoch__learns_and_repeats(void **state)
{
    (void)state;
    cr_rng r;
    seeded(&r, "epoch__learns_and_repeats");
    cr_frames fr;
    make_frames(&fr, 16, 40, 48, &r);
    /* 6 epochs of 4 steps; 3 where CR_TEST_SCALE < 1 (valgrind, sanitizers): the loss still falls */
    const int E = cr_test_count(100) < 100 ? 3 : 6, half = E / 2;
    double l1[6], l2[6], l3[6];
    cr_model m1, m2, m3;
    cr_trainer t1, t2, t3;
    train_tiny(&m1, &t1, &fr, E, E, l1);
    printf("epoch mean losses:");
    for (int e = 0; e < E; e++) printf(" %.4f", l1[e]);
    printf("\n");
    double best = l1[1];
    for (int e = 2; e < E; e++) best = l1[e] < best ? l1[e] : best;
    if (!(l1[E - 1] < l1[0]) || !(best < 0.85 * l1[0]))
        fail_msg("the loss did not fall (last epoch below the first, the best by 15%%) in %d "
                 "epochs: %.4f -> best %.4f, last %.4f", E, l1[0], best, l1[E - 1]);
    train_tiny(&m2, &t2, &fr, E, E, l2);
    assert_memory_equal(l1, l2, (size_t)E * sizeof *l1);
    expect_same_bits(&m1, &m2);
    /* interrupted after epoch `half`, resumed in a new trainer */
    char path[] = "/tmp/test_ch08_lab_XXXXXX";
    const int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    train_tiny(&m3, &t3, &fr, half, E, l3);
    assert_cr_ok(cr_checkpoint_save(&t3, path, NULL));
    cr_trainer_free(&t3);
    cr_model_free(&m3);
    train_tiny(&m3, &t3, &fr, 0, E, l3);
    assert_cr_ok(cr_checkpoint_load(&t3, path));
    remove(path);
    cr_augment a;
    cr_augment_default(&a, 32);
    while (t3.epoch < E) assert_cr_ok(cr_fpn_train_epoch(&t3, &fr, &a, NULL, NULL, &l3[t3.epoch]));
    expect_same_bits(&m1, &m3);
    /* a trainer built for another crop is refused */
    cr_augment_default(&a, 64);
    assert_cr_fails(cr_fpn_train_epoch(&t3, &fr, &a, NULL, NULL, NULL), CR_EINVAL);
    /* evaluation and prediction agree: the confusion of the predictions at frame size */
    cr_confusion conf;
    assert_cr_ok(cr_confusion_init(&conf, 3));
    assert_cr_ok(cr_fpn_evaluate(&m1, &fr, 32, 32, 3, CR_CAMVID_IGNORE, NULL, &conf));
    const double acc = cr_confusion_pixel_accuracy(&conf);
    printf("pixel accuracy after %d epochs: %.3f\n", E, acc);
    assert_true(acc > 0.4);   /* chance is 1/3 */
    cr_confusion_free(&conf);
    cr_trainer_free(&t1);
    cr_trainer_free(&t2);
    cr_trainer_free(&t3);
    cr_model_free(&m1);
    cr_model_free(&m2);
    cr_model_free(&m3);
    cr_frames_free(&fr);
}

/* An evaluation batch at the frame's own size, turned back into bytes, is the frame;
 * the predictor's classes are the argmax of the logits. */
static void predict__bytes_and_argmax(void **state)
{
    (void)state;
    cr_rng r;
    seeded(&r, "predict__bytes_and_argmax");
    cr_frames fr;
    make_frames(&fr, 2, 32, 64, &r);
    cr_tensor x = {0};
    int32_t lab[32 * 64], pred[32 * 64];
    uint8_t rgb[32 * 64 * 3];
    const int64_t idx = 1;
    assert_cr_ok(cr_tensor_alloc4(&x, 1, 3, 32, 64));
    assert_cr_ok(cr_frames_eval_batch(&fr, &idx, 1, &x, lab));
    cr_denormalize_rgb(&x, 0, rgb);
    assert_memory_equal(rgb, fr.rgb + 32 * 64 * 3, sizeof rgb);
    cr_model m;
    build_reduced(&m, 3);
    assert_cr_ok(cr_fpn_predict(&m, &x, pred));
    assert_true(m.training);   /* mode restored */
    const cr_tensor *y;
    cr_model_train(&m, false);
    assert_cr_ok(cr_model_forward(&m, &x, &y));
    int seen[3] = {0, 0, 0};
    for (int p = 0; p < 32 * 64; p++) {
        const float *v = y->data + p;
        const int P = 32 * 64;
        assert_true(pred[p] >= 0 && pred[p] < 3);
        for (int c = 0; c < 3; c++) assert_true(v[c * P] <= v[pred[p] * P]);
        seen[pred[p]]++;
    }
    printf("predicted classes: %d %d %d\n", seen[0], seen[1], seen[2]);
    cr_model_free(&m);
    cr_tensor_free(&x);
    cr_frames_free(&fr);
}

/* Runs the lab with args (output to a temporary file); returns the exit code and the
 * output in out. */
static int run_lab(const char *args, char *out, size_t len)
{
    if (!lab_path) fail_msg("the lab's path is argv[1] (meson test passes it)");
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' %s 2>&1", lab_path, args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    const size_t n = fread(out, 1, len - 1, p);
    out[n] = 0;
    const int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Bad arguments: exit code 2 and a message naming the option, before any work. */
static void lab__refusals(void **state)
{
    (void)state;
    static const struct { const char *args, *want; } cases[] = {
        {"train --data /nonexistent --crop 100", "--crop"},
        {"train --data /nonexistent --eval-size 192", "--eval-size"},
        {"train --data /nonexistent --eval-size 192x250", "--eval-size"},
        {"train --data /nonexistent --eval-size x256", "--eval-size"},
        {"train --data /nonexistent --lr -1", "--lr"},
        {"train --data /nonexistent --epochs 3 --minutes 1", "--minutes"},
        {"train --data /nonexistent --limit 0", "--limit"},
        {"train --crop 64", "--data"},
        {"train --data /nonexistent", "CamVid"},
        {"predict --weights w --images . --out /nonexistent", "--out"},
        {"predict --weights w --images . --out . --panels 2", "--panels"},
        {"predict --weights w", "--images DIR or --panels N"},
        {"predict --weights w --images . --out . --grid g.png", "--grid"},
        {"predict --weights w --panels 2 --data .", "--out"},
        {"latency --batches 1,,2", "--batches"},
        {"latency --size 100x100", "--size"},
        {"latency --device gpu", "expected cpu or cuda"},
        {"latency --precisions tf32", "only with --device cuda"},
        {"step --device gpu", "expected cpu or cuda"},
        {"step --device cuda --net block", "not on the GPU"},
        {"step --net resnet", "--net"},
        {"step --net block --crop 66", "--crop"},
        {"step --net lab4 --crop 64", "--crop"},
        {"step --crop 100", "--crop"},
        {"fly", "unknown command"},
        {"", "usage"},
    };
    char out[8192];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const int rc = run_lab(cases[i].args, out, sizeof out);
        if (rc != 2 || !strstr(out, cases[i].want))
            fail_msg("'%s': exit %d, expected 2 and a message with '%s'; got:\n%s", cases[i].args,
                     rc, cases[i].want, out);
    }
}

/* --device cuda: refused by a build without nvcc (usage, exit 2), by a machine without a
 * GPU (exit 1), each naming why; where there is a GPU it runs and prints a GPU row. */
static void lab__latency_device_cuda(void **state)
{
    (void)state;
    char out[16384];
    const int rc = run_lab("latency --device cuda --quick --batches 1 --repeats 1", out, sizeof out);
    if (rc == 2 && strstr(out, "--device cuda: this lab08-fpn was built without CUDA")) return;
    if (rc == 1 && strstr(out, "--device cuda: no usable GPU (")) return;
    if (rc == 0 && strstr(out, "ours/gpu")) return;
    fail_msg("latency --device cuda: exit %d; expected 2 (no nvcc), 1 (no GPU), each with its reason, "
             "or 0 with a GPU row; got:\n%s", rc, out);
}

/* The latency CSV has the original project's columns plus impl and threads, and a row. */
static void lab__latency_csv(void **state)
{
    (void)state;
    char path[] = "/tmp/test_ch08_lat_XXXXXX";
    const int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    char args[256], out[8192];
    snprintf(args, sizeof args, "latency --batches 1 --size 32x64 --repeats 1 --threads 1 "
             "--ours-only --csv %s", path);
    const int rc = run_lab(args, out, sizeof out);
    if (rc != 0) fail_msg("latency exit %d:\n%s", rc, out);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[1024], header[1024] = "", row[1024] = "";
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#') continue;
        if (!header[0]) snprintf(header, sizeof header, "%s", line);
        else if (!row[0]) snprintf(row, sizeof row, "%s", line);
    }
    fclose(f);
    remove(path);
    assert_string_equal(header, "batch_size,device,precision,latency_mean_ms,latency_median_ms,"
                                "latency_p90_ms,images_per_s,peak_memory_mib,impl,threads\n");
    int b, threads;
    double mean, med, p90, ips, mib;
    char impl[16];
    if (sscanf(row, "%d,cpu,fp32,%lf,%lf,%lf,%lf,%lf,%15[^,],%d", &b, &mean, &med, &p90, &ips,
               &mib, impl, &threads) != 8)
        fail_msg("row not in the columns: %s", row);
    assert_int_equal(b, 1);
    assert_string_equal(impl, "ours");
    assert_int_equal(threads, 1);
    assert_true(mean > 0 && med > 0 && p90 >= med && ips > 0);
    assert_true(mib > 1.0 || mib == -1.0);
}

/* One `step` CSV row of ours, as the lab writes it. */
typedef struct {
    char policy[32], crop[32], net[16];
    int batch, threads, steps;
    double med, mn, cpu, fw, ls, bw, ad;
} step_row;

/* Runs `lab08-fpn ARGS --csv TMP` (a step command), checks its header and that it wrote
 * exactly one row (ours: no PyTorch row), parses that row into r and the run's output
 * into out (size n). */
static void run_step_row(const char *args, step_row *r, char *out, size_t n)
{
    char path[] = "/tmp/test_ch08_step_XXXXXX";
    const int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s --csv %s", args, path);
    const int rc = run_lab(cmd, out, n);
    if (rc != 0) fail_msg("'%s': exit %d:\n%s", args, rc, out);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[1024], header[1024] = "", row[1024] = "";
    int rows = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#') continue;
        if (!header[0]) snprintf(header, sizeof header, "%s", line);
        else if (rows++ == 0) snprintf(row, sizeof row, "%s", line);
    }
    fclose(f);
    remove(path);
    assert_string_equal(header, "impl,policy,batch,crop,threads,steps,median_s,min_s,cpu_median_s,"
                                "forward_s,loss_s,backward_s,adamw_s,net\n");
    if (rows != 1) fail_msg("'%s': %d rows, expected 1 (ours)", args, rows);
    if (sscanf(row, "ours,%31[^,],%d,%31[^,],%d,%d,%lf,%lf,%lf,%lf,%lf,%lf,%lf,%15[^,\n]", r->policy,
               &r->batch, r->crop, &r->threads, &r->steps, &r->med, &r->mn, &r->cpu, &r->fw, &r->ls,
               &r->bw, &r->ad, r->net) != 13)
        fail_msg("row not in the columns: %s", row);
}

/* Times positive, and the phases' means sum to the mean step, which lies between the
 * fastest and twice the median, up to the CSV's rounding (4 decimals: 5e-5 s for each of
 * the four phases and for the step; a 5 ms quick step sums to 0.0050 against 0.0051). */
static void check_step_times(const step_row *r)
{
    assert_true(r->mn > 0 && r->med >= r->mn && r->fw > 0 && r->bw > 0 && r->ls >= 0 && r->ad >= 0);
    const double sum = r->fw + r->ls + r->bw + r->ad, slack = 5 * 5e-5;
    if (!(sum >= r->mn * 0.999 - slack && sum <= 2 * r->med + slack))
        fail_msg("%s: phases sum to %g s; steps took %g (min) and %g (median)", r->net, sum, r->mn,
                 r->med);
}

/* `step --csv` writes its row (it once accepted --csv and wrote nothing): ours, the phases
 * adding up to no more than the median step's neighbourhood, and no PyTorch row in --quick
 * (its script builds the full network, ours the reduced one); net fpn by default. */
static void lab__step_csv(void **state)
{
    (void)state;
    char out[8192];
    step_row r;
    run_step_row("step --quick --steps 2 --batch 2 --crop 64 --threads 1", &r, out, sizeof out);
    assert_string_equal(r.net, "fpn");
    assert_string_equal(r.crop, "64");
    assert_int_equal(r.batch, 2);
    assert_int_equal(r.threads, 1);
    assert_int_equal(r.steps, 2);
    check_step_times(&r);
}

/* `step --net block`: ResNeXt-50's layer2.0 alone, its input 256 x crop/4 x crop/4 (a 32
 * crop: 8 x 8), one row with net block. */
static void lab__step_block(void **state)
{
    (void)state;
    char out[8192];
    step_row r;
    run_step_row("step --net block --quick --ours-only --steps 2 --batch 2 --crop 32 --threads 1",
                 &r, out, sizeof out);
    assert_string_equal(r.net, "block");
    assert_string_equal(r.crop, "32");
    assert_int_equal(r.batch, 2);
    assert_int_equal(r.steps, 2);
    if (!strstr(out, "batch 2 of 256 x 8 x 8")) fail_msg("block: the input is not 2 x 256 x 8 x 8:\n%s", out);
    check_step_times(&r);
}

/* `step --net lab4`: lab 4's FCN on its 90x120 frames, one row with net lab4. */
static void lab__step_lab4(void **state)
{
    (void)state;
    char out[8192];
    step_row r;
    run_step_row("step --net lab4 --quick --ours-only --steps 2 --batch 2 --threads 1", &r, out,
                 sizeof out);
    assert_string_equal(r.net, "lab4");
    assert_string_equal(r.crop, "90x120");
    assert_int_equal(r.batch, 2);
    assert_int_equal(r.steps, 2);
    if (!strstr(out, "batch 2 of 3 x 90 x 120")) fail_msg("lab4: the input is not 2 x 3 x 90 x 120:\n%s", out);
    check_step_times(&r);
}

/* `predict --panels N --grid FILE` on a synthetic CamVid folder (test/, testannot/) and a
 * reduced FPN's random weights: one PNG of N panels stacked with GRID_GAP (4) white rows
 * between; each panel's left third is the frame (its size is the evaluation size: no
 * resampling), the middle third its labels in CamVid's colours (void black), the right
 * third only colours of the network's classes. */
static void lab__predict_grid(void **state)
{
    (void)state;
    enum { N = 2, H = 64, W = 96, GAP = 4, K = 3 };
    cr_rng r;
    seeded(&r, "lab__predict_grid");
    cr_frames fr;
    make_frames(&fr, N, H, W, &r);
    char dir[512], p[1024];
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/ch08_grid_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) fail_msg("mkdtemp %s failed", dir);
    static const char *const subs[] = {"test", "testannot"};
    for (int k = 0; k < 2; k++) {
        snprintf(p, sizeof p, "%s/%s", dir, subs[k]);
        assert_int_equal(mkdir(p, 0700), 0);
    }
    for (int i = 0; i < N; i++) {
        cr_image img = {W, H, 3, fr.rgb + (size_t)i * H * W * 3}, ann = {W, H, 1, fr.labels + (size_t)i * H * W};
        snprintf(p, sizeof p, "%s/test/f%d.png", dir, i);
        assert_cr_ok(cr_png_write(p, &img));
        snprintf(p, sizeof p, "%s/testannot/f%d.png", dir, i);
        assert_cr_ok(cr_png_write(p, &ann));
    }
    cr_model m;
    build_reduced(&m, cr_rng_next(&r));
    char weights[1024], grid[1024], args[4096], out[8192];
    snprintf(weights, sizeof weights, "%s/w.safetensors", dir);
    assert_cr_ok(cr_model_save(&m, weights, NULL));
    cr_model_free(&m);
    snprintf(grid, sizeof grid, "%s/grid.png", dir);
    snprintf(args, sizeof args, "predict --quick --classes %d --weights %s --data %s --panels %d "
             "--grid %s --eval-size %dx%d --threads 1", K, weights, dir, N, grid, H, W);
    const int rc = run_lab(args, out, sizeof out);
    if (rc != 0) fail_msg("predict exit %d:\n%s", rc, out);
    cr_image g = {0};
    assert_cr_ok(cr_png_read(grid, 3, &g));
    assert_int_equal(g.width, 3 * W);
    assert_int_equal(g.height, N * H + (N - 1) * GAP);
    for (int i = 0; i < N; i++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                const uint8_t *row = g.pixels + ((size_t)(i * (H + GAP) + y) * g.width) * 3;
                const uint8_t *frame = fr.rgb + (((size_t)i * H + y) * W + x) * 3;
                for (int c = 0; c < 3; c++)
                    if (abs(row[3 * x + c] - frame[c]) > 1)
                        fail_msg("panel %d (%d,%d) channel %d: %d, the frame has %d", i, y, x, c,
                                 row[3 * x + c], frame[c]);
                const uint8_t *want = cr_camvid_palette[fr.labels[((size_t)i * H + y) * W + x]];
                if (memcmp(row + 3 * (W + x), want, 3) != 0)
                    fail_msg("panel %d (%d,%d): the truth's colour is not its label's", i, y, x);
                int ok = 0;
                for (int k = 0; k < K; k++) ok |= memcmp(row + 3 * (2 * W + x), cr_camvid_palette[k], 3) == 0;
                if (!ok) fail_msg("panel %d (%d,%d): the prediction is not a class colour", i, y, x);
            }
    for (int y = H; y < H + GAP; y++)
        for (int x = 0; x < 3 * 3 * W; x++)
            if (g.pixels[(size_t)y * g.width * 3 + x] != 255) fail_msg("gap row %d is not white", y);
    cr_image_free(&g);
    cr_frames_free(&fr);
    for (int k = 0; k < 2; k++)   /* what this test wrote, then the folders */
        for (int i = 0; i < N; i++) {
            snprintf(p, sizeof p, "%s/%s/f%d.png", dir, subs[k], i);
            assert_int_equal(remove(p), 0);
        }
    for (int k = 0; k < 2; k++) {
        snprintf(p, sizeof p, "%s/%s", dir, subs[k]);
        assert_int_equal(rmdir(p), 0);
    }
    assert_int_equal(remove(weights), 0);
    assert_int_equal(remove(grid), 0);
    assert_int_equal(rmdir(dir), 0);
}

int main(int argc, char **argv)
{
    lab_path = argc > 1 ? argv[1] : NULL;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(palette__camvid_colours),
        cmocka_unit_test(panel__layout),
        cmocka_unit_test(predict__bytes_and_argmax),
        cmocka_unit_test(epoch__learns_and_repeats),
        cmocka_unit_test(lab__refusals),
        cmocka_unit_test(lab__latency_device_cuda),
        cmocka_unit_test(lab__latency_csv),
        cmocka_unit_test(lab__step_csv),
        cmocka_unit_test(lab__step_block),
        cmocka_unit_test(lab__step_lab4),
        cmocka_unit_test(lab__predict_grid),
    };
    return cr_run_tests("ch08_lab", tests);
}
