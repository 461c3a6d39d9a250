// miras: sequence layers as an algebra of memory, attentional bias, retention and algorithm.
// Include this header for every component, Layer and the presets.
#pragma once

#include "miras/core/dual.hpp"
#include "miras/core/error.hpp"
#include "miras/core/gate.hpp"
#include "miras/core/scalar.hpp"
#include "miras/core/tensor.hpp"
#include "miras/layer/layer.hpp"
#include "miras/layer/presets.hpp"
