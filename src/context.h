/* context.h — internal accessors of a rotkv_context for tests and tools that
 * live beside the library (not part of the public API). */
#ifndef ROTKV_CONTEXT_H
#define ROTKV_CONTEXT_H

#include "kv_cache.h"
#include "rotkv.h"

kv_cache *context_kv(rotkv_context *ctx);

#endif
