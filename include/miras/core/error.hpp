// Exception types of miras. Every message names the value, where it is and what is valid.
#pragma once

#include <stdexcept>
#include <string>

namespace miras {

/// Base class of every error miras raises.
class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// A tensor, gate or state passed to a layer is invalid (shape, range or finiteness).
class InputError : public Error {
public:
    using Error::Error;
};

/// A layer configuration is invalid: a dimension, an option or a combination of components.
class ConfigError : public Error {
public:
    using Error::Error;
};

/// Finite inputs drove a computation to a non-finite value: the state of a layer diverged.
class NumericalError : public Error {
public:
    using Error::Error;
};

}  // namespace miras
