// Registry entries of the vector memory: every valid combination with VectorMemory.
// One memory per translation unit keeps each unit light enough to compile in parallel.
#include "registry_impl.hpp"

namespace miras::spec_registry {

template std::vector<Entry> entries_for<VectorMemory, 0>();

}  // namespace miras::spec_registry
