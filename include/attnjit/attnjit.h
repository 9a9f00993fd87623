/* attnjit — JIT-compiled paged attention for NVIDIA GPUs. C ABI.
 *
 * Usage:
 *   attnjit_context ctx;  attnjit_context_create(NULL, &ctx);
 *   attnjit_problem pb;   attnjit_problem_init(&pb);  ... fill fields ...
 *   attnjit_plan plan;    attnjit_plan_create(ctx, &pb, &plan);
 *   size_t ws;            attnjit_plan_workspace_bytes(plan, &ws);  (allocate once)
 *   attnjit_run_args a;   attnjit_run_args_init(&a);  ... fill pointers and strides ...
 *   attnjit_run(plan, &a, stream);            (no allocation, no synchronization)
 *
 * Every function returns a status; on failure attnjit_last_error() (thread-local) says what was
 * wrong, naming the field and what is allowed. Strides are in elements, not bytes.
 */
#ifndef ATTNJIT_H_
#define ATTNJIT_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ATTNJIT_ABI_VERSION 1

#if defined(__GNUC__)
#define ATTNJIT_API __attribute__((visibility("default")))
#else
#define ATTNJIT_API
#endif

typedef enum attnjit_status {
  ATTNJIT_OK = 0,
  ATTNJIT_ERROR_INVALID_ARGUMENT = 1, /* bad field, shape, pointer or stride */
  ATTNJIT_ERROR_UNSUPPORTED = 2,      /* valid request this build or GPU cannot serve */
  ATTNJIT_ERROR_COMPILE = 3,          /* NVRTC failed (log in the message) */
  ATTNJIT_ERROR_CUDA = 4,             /* a driver call failed */
  ATTNJIT_ERROR_NO_DEVICE = 5,        /* no driver or no GPU */
  ATTNJIT_ERROR_CACHE = 6,            /* the kernel cache could not be opened or written */
  ATTNJIT_ERROR_INTERNAL = 7
} attnjit_status;

typedef enum attnjit_dtype {
  ATTNJIT_DTYPE_F16 = 0,
  ATTNJIT_DTYPE_BF16 = 1,
  ATTNJIT_DTYPE_FP8_E4M3 = 2, /* KV only, dequantized in the kernel with args.k_scale/v_scale */
  ATTNJIT_DTYPE_FP8_E5M2 = 3  /* KV only */
} attnjit_dtype;

typedef enum attnjit_kv_storage {
  ATTNJIT_KV_PAGED = 0,     /* k/v_cache[num_blocks, page_size, heads, D] via block_table */
  ATTNJIT_KV_CONTIGUOUS = 1 /* k/v[total_kv, heads, D] ragged by cu_seqlens_k */
} attnjit_kv_storage;

typedef enum attnjit_family {
  ATTNJIT_FAMILY_PREFILL = 0, /* FlashAttention-2 style tiles over query rows */
  ATTNJIT_FAMILY_DECODE = 1   /* query heads of a KV head packed into M, split-KV + reduce */
} attnjit_family;

/* The tile configuration: the tuner's choice. All zero = the heuristic default. */
typedef struct attnjit_tile_config {
  int32_t block_m;    /* query rows per CTA: 16 or 32 per warp along M */
  int32_t block_n;    /* keys per KV tile (multiple of 16 * warps_n) */
  int32_t warps_m;    /* warps along query rows */
  int32_t warps_n;    /* warps splitting each KV tile's keys (decode) */
  int32_t stages;     /* cp.async pipeline depth, >= 2 */
  int32_t max_splits; /* decode: upper bound on split-KV partitions; prefill: 1 */
  int32_t min_ctas_per_sm; /* occupancy the register allocation must allow: 1 to 65536 / (64 x threads) */
  int32_t wgmma;      /* 1: Hopper warpgroup products (sm_90a; prefill, 16-bit KV); 0: mma.sync;
                         2: warpgroups with a producer warpgroup for the copies (warps_m 8 or 12),
                            which also widens fp8 KV; not with skip-softmax (whose copies wait
                            for each tile's vote) */
} attnjit_tile_config;

/* Masks and sparsity patterns compiled into the kernel (the attention contract of the design
 * defines each exactly). Flags select code; the values that may change per call are run args.
 * Details the contract leaves open, as implemented:
 * - A query row that sees no key at all gets O = 0 and LSE = -inf (LSE = its sink logit with
 *   learned sinks).
 * - N:M: exempt keys (j < nm_dense_sink_tokens, pos(i) - j < nm_dense_recent_tokens) take part in
 *   the ranking and may take one of the N places; the recent rule is read literally, so without a
 *   causal mask every key after pos(i) is exempt.
 * - Skip-softmax: each KV split starts from a running max of -inf, and the learned sink does not
 *   count towards it.
 * - Block sparse: a row's kv_indices may come in any order but must not repeat a block. */
typedef struct attnjit_sparsity {
  int32_t sliding_window; /* keys with pos(i) - j >= args.window_size hidden, except j < args.sink_tokens */
  int32_t learned_sinks;  /* args.sinks[q head] joins each row's softmax denominator */
  int32_t soft_cap;       /* scores become args.soft_cap * tanh(s / args.soft_cap) before masking */
  int32_t nm_n, nm_m;     /* N:M sparse softmax: M in {4, 8, 16}, 0 < N < M; 0, 0 = off */
  int32_t skip_softmax;   /* KV tiles whose scores are all below max + ln(args.skip_threshold) skipped */
  int32_t block_sparse;   /* FlexAttention-form block mask (args.kv_num_blocks / kv_indices) */
  int32_t sparse_block_q; /* block-sparse block sizes: multiples of 16 that the tile sizes divide */
  int32_t sparse_block_kv;
} attnjit_sparsity;

/* What the host application needs: fixed for the life of a plan. */
typedef struct attnjit_problem {
  uint32_t struct_size; /* sizeof(attnjit_problem), set by attnjit_problem_init */
  attnjit_family family;
  attnjit_dtype q_dtype;  /* also the output dtype */
  attnjit_dtype kv_dtype;
  int32_t head_dim_qk; /* multiple of 16 in [16, 256] */
  int32_t head_dim_v;  /* multiple of 16 in [16, 256] */
  int32_t page_size;   /* power of two in [1, 256]; ignored for contiguous storage */
  attnjit_kv_storage kv_storage;
  int32_t causal;
  int32_t num_q_heads;
  int32_t num_kv_heads; /* divides num_q_heads */
  attnjit_sparsity sparsity;
  int32_t kv_scale_per_head; /* fp8 KV: args.k_scale/v_scale hold one scale per kv head */
  /* Upper bounds the workspace is sized for; run() refuses larger calls. */
  int32_t max_batch;
  int64_t max_total_q;
  attnjit_tile_config tile; /* zero = tuned winner or heuristic default */
} attnjit_problem;

typedef struct attnjit_run_args {
  uint32_t struct_size;
  /* q[total_q, num_q_heads, head_dim_qk] */
  const void* q;
  int64_t q_stride_token, q_stride_head;
  /* paged: [num_blocks, page_size, heads, D] addressed as block*stride_block + slot*stride_token
   * + head*stride_head (covers NHD, HND and packed K|V); contiguous: token*stride_token + head*... */
  const void* k;
  const void* v;
  /* Element strides; positive multiples of 8. Block and token strides must stay below 2^31 bytes
   * (the kernels step rows in 32-bit byte offsets); head strides may be any size. */
  int64_t k_stride_block, k_stride_token, k_stride_head;
  int64_t v_stride_block, v_stride_token, v_stride_head;
  const int32_t* block_table; /* [batch, block_table_stride], paged only */
  int32_t block_table_stride;
  const int32_t* cu_seqlens_q; /* [batch + 1], device */
  const int32_t* seq_lens_k;   /* [batch], device, paged */
  const int32_t* cu_seqlens_k; /* [batch + 1], device, contiguous */
  /* o[total_q, num_q_heads, head_dim_v] */
  void* o;
  int64_t o_stride_token, o_stride_head;
  float* lse; /* optional [num_q_heads, total_q], natural log */
  int32_t batch;
  int64_t total_q;
  int32_t max_seqlen_q; /* host-side bounds that size the grid (as vLLM passes them) */
  int32_t max_seqlen_k;
  float scale; /* 0 = 1/sqrt(head_dim_qk) */
  /* Pattern values (read only when the plan's sparsity enables them). */
  int32_t window_size;  /* sliding window W >= 1 */
  int32_t sink_tokens;  /* StreamingLLM sink tokens S >= 0, visible whatever the window says */
  const float* sinks;   /* learned sinks: [num_q_heads] fp32, device */
  float soft_cap;       /* > 0 */
  const float* k_scale; /* fp8 KV: [1] or [num_kv_heads] fp32, device */
  const float* v_scale;
  int32_t nm_dense_sink_tokens;   /* N:M: keys j < this are always kept */
  int32_t nm_dense_recent_tokens; /* N:M: keys with pos(i) - j < this are always kept */
  float skip_threshold;           /* skip-softmax lambda in (0, 1) */
  unsigned long long* skip_stats; /* optional [2] device counters: tiles skipped, tiles seen; run adds
                                     to them, so zero them first (also before each graph replay) */
  const int32_t* kv_num_blocks;   /* block sparse: [mask_batch, num_q_heads, mask_q_blocks] */
  const int32_t* kv_indices;      /* [mask_batch, num_q_heads, mask_q_blocks, mask_max_kv_blocks] */
  int32_t mask_batch;             /* 1 (broadcast over sequences) or batch */
  int32_t mask_q_blocks;
  int32_t mask_max_kv_blocks;
  void* workspace;
  size_t workspace_bytes;
} attnjit_run_args;

typedef struct attnjit_context_s* attnjit_context;
typedef struct attnjit_plan_s* attnjit_plan;

typedef struct attnjit_context_options {
  uint32_t struct_size;
  const char* cache_path;          /* NULL: $ATTNJIT_CACHE, else $XDG_CACHE_HOME/attnjit/cache.sqlite */
  const char* readonly_cache_path; /* optional deployed cache layered under the writable one */
  int32_t device;                  /* CUDA ordinal */
  int32_t disable_cache;           /* compile in memory only */
} attnjit_context_options;

ATTNJIT_API const char* attnjit_last_error(void);
ATTNJIT_API const char* attnjit_status_string(attnjit_status s);
ATTNJIT_API const char* attnjit_version(void);

ATTNJIT_API void attnjit_problem_init(attnjit_problem* p);
ATTNJIT_API void attnjit_run_args_init(attnjit_run_args* a);
ATTNJIT_API void attnjit_context_options_init(attnjit_context_options* o);

/* Checks every field against the contract without a device; the message names the field. */
ATTNJIT_API attnjit_status attnjit_problem_validate(const attnjit_problem* problem);

/* A tile config from its canonical string, "bm128.bn64.wm8.wn1.st4.sp1.oc1[.wg1|.wg2]" (as
 * attnjit_plan_describe prints it after the spec). Checks the form only; the values are checked
 * against a problem by attnjit_problem_validate and attnjit_plan_create. */
ATTNJIT_API attnjit_status attnjit_tile_config_parse(const char* text, attnjit_tile_config* out);

/* Loads libcuda, opens the cache, and retains the device's primary context. */
ATTNJIT_API attnjit_status attnjit_context_create(const attnjit_context_options* opts, attnjit_context* out);
ATTNJIT_API attnjit_status attnjit_context_destroy(attnjit_context ctx);

/* Resolves the tile config and the binary (cache, else NVRTC + store) and loads the module. */
ATTNJIT_API attnjit_status attnjit_plan_create(attnjit_context ctx, const attnjit_problem* problem,
                                   attnjit_plan* out);
ATTNJIT_API attnjit_status attnjit_plan_destroy(attnjit_plan plan);
ATTNJIT_API attnjit_status attnjit_plan_workspace_bytes(attnjit_plan plan, size_t* bytes);
/* The canonical spec string of the plan's kernel (for logs and cache inspection). */
ATTNJIT_API attnjit_status attnjit_plan_describe(attnjit_plan plan, const char** spec);

/* The split-KV count run() uses for these bounds (1 for the prefill family): the KV tiles each
 * (query block, head) visits are cut into this many consecutive ranges of ceil(tiles / splits). */
ATTNJIT_API attnjit_status attnjit_plan_num_splits(attnjit_plan plan, int32_t batch, int32_t max_seqlen_q,
                                                   int32_t max_seqlen_k, int32_t* splits);

/* Enqueues the attention on `stream` (a CUstream / cudaStream_t). */
ATTNJIT_API attnjit_status attnjit_run(attnjit_plan plan, const attnjit_run_args* args, void* stream);

/* A block mask for the block-sparse kernels (SpargeAttn-style): per (sequence, q head, q block of
 * block_q rows) the KV blocks of block_kv keys are scored by mean-pooled q . mean-pooled k, and the
 * best max(1, ceil(topk * blocks - 1e-4)) are kept (in float: 0.3 x 10 keeps 3; ties to the lower
 * index; the first block too with force_first_block; under causal only blocks with a key visible to
 * the q block compete), written in ascending order. Output is per sequence: use it with
 * args.mask_batch = batch. Rows for q blocks past a sequence's length get kv_num_blocks = 0; rows
 * past ceil(max_seqlen_q / block_q) are not written. */
typedef struct attnjit_block_mask_args {
  uint32_t struct_size;
  attnjit_dtype dtype; /* q and k: F16 or BF16 */
  int32_t head_dim;    /* multiple of 8 in [8, 256] */
  int32_t num_q_heads, num_kv_heads;
  const void* q; /* [total_q, num_q_heads, head_dim] via strides */
  int64_t q_stride_token, q_stride_head;
  const void* k; /* contiguous [total_kv, num_kv_heads, head_dim] via strides */
  int64_t k_stride_token, k_stride_head;
  const int32_t* cu_seqlens_q; /* [batch + 1], device */
  const int32_t* cu_seqlens_k; /* [batch + 1], device */
  int32_t batch, max_seqlen_q, max_seqlen_k;
  int32_t block_q, block_kv; /* the block sizes of the block-sparse plan */
  float topk;                /* fraction of KV blocks kept, in (0, 1] */
  int32_t force_first_block;
  int32_t causal;
  int32_t* kv_num_blocks; /* out: [batch, num_q_heads, mask_q_blocks] */
  int32_t* kv_indices;    /* out: [batch, num_q_heads, mask_q_blocks, mask_max_kv_blocks] */
  int32_t mask_q_blocks, mask_max_kv_blocks;
} attnjit_block_mask_args;

ATTNJIT_API void attnjit_block_mask_args_init(attnjit_block_mask_args* a);
ATTNJIT_API attnjit_status attnjit_build_block_mask(attnjit_context ctx, const attnjit_block_mask_args* args,
                                                    void* stream);

#ifdef __cplusplus
}
#endif
#endif /* ATTNJIT_H_ */
