// Options of a layer that are not part of any component: sizes, query scale, read timing, execution.
#pragma once

#include <optional>

#include "miras/core/tensor.hpp"

namespace miras {

/// How a layer runs a sequence. All forms return the same numbers up to rounding.
///   reference  the token loop over the components, for every combination
///   recurrent  a fused token loop where one exists (one pass over the state per token), the matrix
///              form of whole mini-batches for MLP memories (minibatch_mlp.hpp), else reference
///   chunked    the chunked form (a ConfigError for layers without an exact chunked form)
///   automatic  chunked where it exists and the call has at least chunk_size tokens, else recurrent
enum class Execution { automatic, reference, recurrent, chunked };

enum class ReadTiming { after_write, before_write };

struct LayerOptions {
    Index heads = 1;
    Index key_dim = 1;
    Index value_dim = 1;
    /// Scale s applied to the query features; unset means 1 / sqrt(K).
    std::optional<double> query_scale;
    ReadTiming read = ReadTiming::after_write;
    /// Key-value pairs written per token (DeltaProduct writes several).
    Index steps_per_token = 1;
    Execution execution = Execution::automatic;
    /// Tokens per chunk of the chunked form. It changes the speed, never the result. At K = V = 128
    /// on one core of an Intel Xeon, 16 ran Gated DeltaNet, GLA, KDA and Mamba2 6 to 26% faster
    /// than 64.
    Index chunk_size = 16;
    /// Threads over the (sequence, head) pairs of a call (over groups of heads of a sequence in the
    /// chunked forms). Each head runs on one thread, so the results are bitwise the same for every
    /// thread count.
    int threads = 1;
};

}  // namespace miras
