// Where a retention gate meets the gradient of a step.
#pragma once

namespace miras {

/// decay_then_gradient: the gradient is taken at the decayed state (Gated DeltaNet).
/// gradient_then_decay: the gradient is taken at the previous state (Titans, Moneta, Yaad).
enum class Placement { decay_then_gradient, gradient_then_decay };

inline const char* placement_name(Placement p) {
    return p == Placement::decay_then_gradient ? "decay_then_gradient" : "gradient_then_decay";
}

}  // namespace miras
