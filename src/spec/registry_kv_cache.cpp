// Registry entries of the kv_cache memory: every valid combination with KVCacheMemory.
// One memory per translation unit keeps each unit light enough to compile in parallel.
#include "registry_impl.hpp"

namespace miras::spec_registry {

template std::vector<Entry> entries_for<KVCacheMemory, 0>();

}  // namespace miras::spec_registry
