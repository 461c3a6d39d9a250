// libFuzzer target for JSON layer specs: every input goes through the parser, the layer builder and
// a three-token forward pass (see spec_fuzz_entry.hpp). Built by scripts/fuzz.sh with clang.
#include <cstddef>
#include <cstdint>

#include "spec_fuzz_entry.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    miras::fuzz::run_spec_bytes(data, size);
    return 0;
}
