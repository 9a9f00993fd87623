// The C ABI: opaque handles over Context and Plan, exceptions turned into status codes and a
// thread-local message.
#include <exception>
#include <string>

#include <fmt/format.h>

#include "attnjit/attnjit.h"
#include "cache/store.h"
#include "codegen/errors.h"
#include "runtime/block_mask.h"
#include "runtime/context.h"

struct attnjit_context_s {
  std::unique_ptr<attnjit::Context> impl;
};
struct attnjit_plan_s {
  std::unique_ptr<attnjit::Plan> impl;
};

namespace {

thread_local std::string g_last_error;

attnjit_status fail(attnjit_status s, std::string msg) {
  g_last_error = std::move(msg);
  return s;
}

template <class F> attnjit_status guarded(F&& f) {
  try {
    g_last_error.clear();
    return f();
  } catch (const attnjit::SpecError& e) {
    return fail(ATTNJIT_ERROR_INVALID_ARGUMENT, e.what());
  } catch (const attnjit::CompileError& e) {
    return fail(ATTNJIT_ERROR_COMPILE, e.what());
  } catch (const attnjit::UnsupportedError& e) {
    return fail(ATTNJIT_ERROR_UNSUPPORTED, e.what());
  } catch (const attnjit::NoDeviceError& e) {
    return fail(ATTNJIT_ERROR_NO_DEVICE, e.what());
  } catch (const attnjit::CudaError& e) {
    return fail(ATTNJIT_ERROR_CUDA, e.what());
  } catch (const attnjit::cache::Error& e) {
    return fail(ATTNJIT_ERROR_CACHE, e.what());
  } catch (const std::exception& e) {
    return fail(ATTNJIT_ERROR_INTERNAL, e.what());
  } catch (...) {
    return fail(ATTNJIT_ERROR_INTERNAL, "unknown error");
  }
}

#define ATTNJIT_REQUIRE(ptr, name) \
  if ((ptr) == nullptr) return fail(ATTNJIT_ERROR_INVALID_ARGUMENT, fmt::format("{}: got null; allowed: a valid pointer", name))

} // namespace

extern "C" {

const char* attnjit_last_error(void) { return g_last_error.c_str(); }

const char* attnjit_status_string(attnjit_status s) {
  switch (s) {
    case ATTNJIT_OK: return "ok";
    case ATTNJIT_ERROR_INVALID_ARGUMENT: return "invalid argument";
    case ATTNJIT_ERROR_UNSUPPORTED: return "unsupported";
    case ATTNJIT_ERROR_COMPILE: return "compile error";
    case ATTNJIT_ERROR_CUDA: return "CUDA error";
    case ATTNJIT_ERROR_NO_DEVICE: return "no device";
    case ATTNJIT_ERROR_CACHE: return "cache error";
    case ATTNJIT_ERROR_INTERNAL: return "internal error";
  }
  return "unknown status";
}

const char* attnjit_version(void) { return ATTNJIT_VERSION; }

void attnjit_problem_init(attnjit_problem* p) {
  if (!p) return;
  *p = attnjit_problem{};
  p->struct_size = sizeof(attnjit_problem);
  p->family = ATTNJIT_FAMILY_PREFILL;
  p->q_dtype = ATTNJIT_DTYPE_BF16;
  p->kv_dtype = ATTNJIT_DTYPE_BF16;
  p->head_dim_qk = 128;
  p->head_dim_v = 128;
  p->page_size = 16;
  p->kv_storage = ATTNJIT_KV_PAGED;
  p->num_q_heads = 1;
  p->num_kv_heads = 1;
  p->max_batch = 1;
  p->max_total_q = 1;
}

void attnjit_run_args_init(attnjit_run_args* a) {
  if (!a) return;
  *a = attnjit_run_args{};
  a->struct_size = sizeof(attnjit_run_args);
}

void attnjit_block_mask_args_init(attnjit_block_mask_args* a) {
  if (!a) return;
  *a = attnjit_block_mask_args{};
  a->struct_size = sizeof(attnjit_block_mask_args);
  a->dtype = ATTNJIT_DTYPE_BF16;
  a->block_q = a->block_kv = 128;
  a->topk = 0.5f;
}

attnjit_status attnjit_build_block_mask(attnjit_context ctx, const attnjit_block_mask_args* args, void* stream) {
  ATTNJIT_REQUIRE(ctx, "ctx");
  ATTNJIT_REQUIRE(args, "args");
  return guarded([&] {
    attnjit::build_block_mask(*ctx->impl, *args, static_cast<CUstream>(stream));
    return ATTNJIT_OK;
  });
}

void attnjit_context_options_init(attnjit_context_options* o) {
  if (!o) return;
  *o = attnjit_context_options{};
  o->struct_size = sizeof(attnjit_context_options);
}

attnjit_status attnjit_problem_validate(const attnjit_problem* problem) {
  ATTNJIT_REQUIRE(problem, "problem");
  return guarded([&] {
    attnjit::validate_problem(*problem);
    return ATTNJIT_OK;
  });
}

attnjit_status attnjit_tile_config_parse(const char* text, attnjit_tile_config* out) {
  ATTNJIT_REQUIRE(text, "text");
  ATTNJIT_REQUIRE(out, "out");
  return guarded([&] {
    *out = attnjit::tile_to_c(attnjit::parse_tile(text));
    return ATTNJIT_OK;
  });
}

attnjit_status attnjit_context_create(const attnjit_context_options* opts, attnjit_context* out) {
  ATTNJIT_REQUIRE(out, "out");
  *out = nullptr;
  return guarded([&] {
    attnjit_context_options o;
    attnjit_context_options_init(&o);
    if (opts) {
      if (opts->struct_size != sizeof(attnjit_context_options))
        return fail(ATTNJIT_ERROR_INVALID_ARGUMENT,
                    fmt::format("options.struct_size: got {}; allowed: {} (call attnjit_context_options_init)",
                                opts->struct_size, sizeof(attnjit_context_options)));
      o = *opts;
    }
    *out = new attnjit_context_s{std::make_unique<attnjit::Context>(o)};
    return ATTNJIT_OK;
  });
}

attnjit_status attnjit_context_destroy(attnjit_context ctx) {
  ATTNJIT_REQUIRE(ctx, "ctx");
  return guarded([&] {
    delete ctx;
    return ATTNJIT_OK;
  });
}

attnjit_status attnjit_plan_create(attnjit_context ctx, const attnjit_problem* problem, attnjit_plan* out) {
  ATTNJIT_REQUIRE(out, "out");
  *out = nullptr;
  ATTNJIT_REQUIRE(ctx, "ctx");
  ATTNJIT_REQUIRE(problem, "problem");
  return guarded([&] {
    *out = new attnjit_plan_s{std::make_unique<attnjit::Plan>(*ctx->impl, *problem)};
    return ATTNJIT_OK;
  });
}

attnjit_status attnjit_plan_destroy(attnjit_plan plan) {
  ATTNJIT_REQUIRE(plan, "plan");
  delete plan;
  return ATTNJIT_OK;
}

attnjit_status attnjit_plan_workspace_bytes(attnjit_plan plan, size_t* bytes) {
  ATTNJIT_REQUIRE(plan, "plan");
  ATTNJIT_REQUIRE(bytes, "bytes");
  *bytes = plan->impl->workspace_bytes();
  return ATTNJIT_OK;
}

attnjit_status attnjit_plan_describe(attnjit_plan plan, const char** spec) {
  ATTNJIT_REQUIRE(plan, "plan");
  ATTNJIT_REQUIRE(spec, "spec");
  *spec = plan->impl->description().c_str();
  return ATTNJIT_OK;
}

attnjit_status attnjit_plan_num_splits(attnjit_plan plan, int32_t batch, int32_t max_seqlen_q, int32_t max_seqlen_k,
                                       int32_t* splits) {
  ATTNJIT_REQUIRE(plan, "plan");
  ATTNJIT_REQUIRE(splits, "splits");
  if (batch < 1 || max_seqlen_q < 1 || max_seqlen_k < 1)
    return fail(ATTNJIT_ERROR_INVALID_ARGUMENT,
                fmt::format("batch/max_seqlen_q/max_seqlen_k: got {}/{}/{}; allowed: >= 1 each", batch, max_seqlen_q, max_seqlen_k));
  *splits = plan->impl->num_splits(batch, max_seqlen_q, max_seqlen_k);
  return ATTNJIT_OK;
}

attnjit_status attnjit_run(attnjit_plan plan, const attnjit_run_args* args, void* stream) {
  ATTNJIT_REQUIRE(plan, "plan");
  ATTNJIT_REQUIRE(args, "args");
  return guarded([&] {
    plan->impl->run(*args, static_cast<CUstream>(stream));
    return ATTNJIT_OK;
  });
}

} // extern "C"
