// Registry entries of the matrix memory: every valid combination with MatrixMemory, in float and double.
// One memory per translation unit keeps each unit light enough to compile in parallel.
#include "registry_impl.hpp"

namespace miras::spec_registry {

template std::vector<Entry> entries_for<MatrixMemory>();

}  // namespace miras::spec_registry
