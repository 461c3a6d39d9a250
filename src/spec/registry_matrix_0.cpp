// Registry entries of the matrix memory, part 0 of 2: every other valid combination with
// MatrixMemory (the matrix memory has the most), so that two units share its compile time.
#include "registry_impl.hpp"

namespace miras::spec_registry {

template std::vector<Entry> entries_for<MatrixMemory, 0>();

}  // namespace miras::spec_registry
