// Reverse-mode automatic differentiation: a tape of operations and the scalar Var<T> that records
// onto it, usable as an Eigen scalar wherever Dual<T> is.
//
// Every operation on a Var whose operands are not all constants appends one node: the indices of
// at most two parent nodes and the local partial derivative with respect to each. A reverse sweep
// over the nodes (Tape::backward) then accumulates adjoints, adj[parent] += partial * adj[node], so
// one sweep yields the gradient of a scalar with respect to every variable. Constants (a Var built
// from a number) carry the index -1 and record nothing; adding a constant to a variable keeps the
// variable's node. The tape an operation records onto is the thread's active tape, set by a
// TapeScope, so each thread can run its own tape.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <ostream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include <Eigen/Core>

#include "miras/core/dual.hpp"
#include "miras/core/scalar.hpp"

namespace miras {

template <class T>
class Tape;

namespace detail {
template <class T>
inline thread_local Tape<T>* active_tape = nullptr;
}  // namespace detail

/// The operations recorded for one computation, in order, in one contiguous array of nodes.
template <class T>
class Tape {
public:
    using NodeIndex = std::int32_t;
    static constexpr NodeIndex none = -1;

    /// Reserves room for `nodes` operations, so that a tape of known size never reallocates.
    void reserve(std::size_t nodes) { nodes_.reserve(nodes); }

    /// Removes every node and adjoint; variables made before are invalid afterwards.
    void clear() {
        nodes_.clear();
        adjoints_.clear();
    }

    std::size_t size() const { return nodes_.size(); }

    /// Appends a node with up to two parents (none for a missing one) and returns its index.
    NodeIndex push(NodeIndex a, T da, NodeIndex b, T db) {
        const std::size_t index = size();
        if (index >= static_cast<std::size_t>(std::numeric_limits<NodeIndex>::max())) {
            throw std::length_error("tape has " + std::to_string(index) +
                                    " nodes, the most a 32-bit node index can address; differentiate a shorter segment");
        }
        nodes_.push_back({a, b, da, db});
        return static_cast<NodeIndex>(index);
    }

    /// Sets every adjoint to zero, sized to the current tape.
    void zero_adjoints() { adjoints_.assign(size(), T(0)); }

    /// The adjoint of node i: after backward, d(seeded output) / d(node i). Seeds are written here.
    T& adjoint(NodeIndex i) { return adjoints_[static_cast<std::size_t>(i)]; }
    T adjoint(NodeIndex i) const { return adjoints_[static_cast<std::size_t>(i)]; }

    /// Propagates the seeded adjoints from the last node to the first.
    void backward() {
        if (adjoints_.size() != size()) adjoints_.resize(size(), T(0));
        for (std::size_t i = size(); i-- > 0;) {
            const T g = adjoints_[i];
            if (g == T(0)) continue;  // also keeps 0 * inf partials out of unrelated adjoints
            const Node& node = nodes_[i];
            if (node.a != none) adjoints_[static_cast<std::size_t>(node.a)] += node.da * g;
            if (node.b != none) adjoints_[static_cast<std::size_t>(node.b)] += node.db * g;
        }
    }

private:
    /// One operation: parents a and b (none when missing) and the partials d(node)/da, d(node)/db.
    struct Node {
        NodeIndex a, b;
        T da, db;
    };

    std::vector<Node> nodes_;
    std::vector<T> adjoints_;
};

/// Makes `tape` the active tape of this thread for the scope's lifetime and restores the previous
/// one afterwards.
template <class T>
class TapeScope {
public:
    explicit TapeScope(Tape<T>& tape) : previous_(detail::active_tape<T>) { detail::active_tape<T> = &tape; }
    ~TapeScope() { detail::active_tape<T> = previous_; }
    TapeScope(const TapeScope&) = delete;
    TapeScope& operator=(const TapeScope&) = delete;

private:
    Tape<T>* previous_;
};

/// A value on the active tape: its value and its node (-1 for a constant).
template <class T>
struct Var {
    using NodeIndex = typename Tape<T>::NodeIndex;

    T v{0};
    NodeIndex index = Tape<T>::none;

    Var() = default;
    template <class A, std::enable_if_t<std::is_arithmetic_v<A>, int> = 0>
    Var(A value) : v(static_cast<T>(value)) {}
    Var(T value, NodeIndex node) : v(value), index(node) {}

    bool constant() const { return index == Tape<T>::none; }

    /// A new independent variable on the active tape.
    static Var variable(T value) { return {value, active().push(Tape<T>::none, T(0), Tape<T>::none, T(0))}; }

    /// Returns the active tape of this thread. Raises std::logic_error when no TapeScope is open.
    static Tape<T>& active() {
        Tape<T>* tape = detail::active_tape<T>;
        if (tape == nullptr) {
            throw std::logic_error("an operation on a Var variable ran with no active tape; open a TapeScope first");
        }
        return *tape;
    }

    /// f(a) with df/da = da.
    static Var unary(T value, const Var& a, T da) {
        if (a.constant()) return Var(value);
        return {value, active().push(a.index, da, Tape<T>::none, T(0))};
    }

    /// f(a, b) with partials da and db; a constant operand records no parent.
    static Var binary(T value, const Var& a, T da, const Var& b, T db) {
        if (a.constant()) return unary(value, b, db);
        if (b.constant()) return unary(value, a, da);
        return {value, active().push(a.index, da, b.index, db)};
    }

    Var& operator+=(const Var& o) { return *this = *this + o; }
    Var& operator-=(const Var& o) { return *this = *this - o; }
    Var& operator*=(const Var& o) { return *this = *this * o; }
    Var& operator/=(const Var& o) { return *this = *this / o; }
};

// Adding or subtracting a constant keeps the variable's node, because the partial is one.
template <class T> Var<T> operator+(const Var<T>& a, const Var<T>& b) {
    if (b.constant()) return {a.v + b.v, a.index};
    if (a.constant()) return {a.v + b.v, b.index};
    return Var<T>::binary(a.v + b.v, a, T(1), b, T(1));
}
template <class T> Var<T> operator-(const Var<T>& a, const Var<T>& b) {
    if (b.constant()) return {a.v - b.v, a.index};
    return Var<T>::binary(a.v - b.v, a, T(1), b, T(-1));
}
template <class T> Var<T> operator*(const Var<T>& a, const Var<T>& b) { return Var<T>::binary(a.v * b.v, a, b.v, b, a.v); }
template <class T> Var<T> operator/(const Var<T>& a, const Var<T>& b) {
    const T inverse = T(1) / b.v;
    const T value = a.v * inverse;
    return Var<T>::binary(value, a, inverse, b, -value * inverse);
}
template <class T> Var<T> operator-(const Var<T>& a) { return Var<T>::unary(-a.v, a, T(-1)); }
template <class T> Var<T> operator+(const Var<T>& a) { return a; }

#define MIRAS_VAR_MIXED_OP(op)                                                                \
    template <class T, class A, std::enable_if_t<std::is_arithmetic_v<A>, int> = 0>           \
    Var<T> operator op(const Var<T>& a, A b) { return a op Var<T>(b); }                       \
    template <class T, class A, std::enable_if_t<std::is_arithmetic_v<A>, int> = 0>           \
    Var<T> operator op(A a, const Var<T>& b) { return Var<T>(a) op b; }
MIRAS_VAR_MIXED_OP(+)
MIRAS_VAR_MIXED_OP(-)
MIRAS_VAR_MIXED_OP(*)
MIRAS_VAR_MIXED_OP(/)
#undef MIRAS_VAR_MIXED_OP

#define MIRAS_VAR_COMPARE(op)                                                                 \
    template <class T> bool operator op(const Var<T>& a, const Var<T>& b) { return a.v op b.v; } \
    template <class T, class A, std::enable_if_t<std::is_arithmetic_v<A>, int> = 0>           \
    bool operator op(const Var<T>& a, A b) { return a.v op static_cast<T>(b); }               \
    template <class T, class A, std::enable_if_t<std::is_arithmetic_v<A>, int> = 0>           \
    bool operator op(A a, const Var<T>& b) { return static_cast<T>(a) op b.v; }
MIRAS_VAR_COMPARE(<)
MIRAS_VAR_COMPARE(<=)
MIRAS_VAR_COMPARE(>)
MIRAS_VAR_COMPARE(>=)
MIRAS_VAR_COMPARE(==)
MIRAS_VAR_COMPARE(!=)
#undef MIRAS_VAR_COMPARE

// The partial derivatives below match those of the Dual functions in dual.hpp.
template <class T> Var<T> exp(const Var<T>& a) { const T e = std::exp(a.v); return Var<T>::unary(e, a, e); }
template <class T> Var<T> log(const Var<T>& a) { return Var<T>::unary(std::log(a.v), a, T(1) / a.v); }
template <class T> Var<T> log1p(const Var<T>& a) { return Var<T>::unary(std::log1p(a.v), a, T(1) / (T(1) + a.v)); }
template <class T> Var<T> expm1(const Var<T>& a) { return Var<T>::unary(std::expm1(a.v), a, std::exp(a.v)); }
template <class T> Var<T> sqrt(const Var<T>& a) {
    const T s = std::sqrt(a.v);
    return Var<T>::unary(s, a, s > T(0) ? T(1) / (T(2) * s) : T(0));
}
template <class T> Var<T> abs(const Var<T>& a) { return a.v < T(0) ? -a : a; }
template <class T> Var<T> fabs(const Var<T>& a) { return abs(a); }
template <class T> Var<T> tanh(const Var<T>& a) { const T t = std::tanh(a.v); return Var<T>::unary(t, a, T(1) - t * t); }
template <class T> Var<T> sin(const Var<T>& a) { return Var<T>::unary(std::sin(a.v), a, std::cos(a.v)); }
template <class T> Var<T> cos(const Var<T>& a) { return Var<T>::unary(std::cos(a.v), a, -std::sin(a.v)); }
template <class T> Var<T> erf(const Var<T>& a) {
    const T two_over_sqrt_pi = T(1.1283791670955126);
    return Var<T>::unary(std::erf(a.v), a, two_over_sqrt_pi * std::exp(-a.v * a.v));
}
template <class T> Var<T> pow(const Var<T>& a, T p) {
    return Var<T>::unary(std::pow(a.v, p), a, p * std::pow(a.v, p - T(1)));
}
template <class T> Var<T> pow(const Var<T>& a, int p) { return pow(a, static_cast<T>(p)); }
template <class T> Var<T> max(const Var<T>& a, const Var<T>& b) { return a.v >= b.v ? a : b; }
template <class T> Var<T> min(const Var<T>& a, const Var<T>& b) { return a.v <= b.v ? a : b; }
template <class T> bool isfinite(const Var<T>& a) { return std::isfinite(a.v); }
template <class T> bool isnan(const Var<T>& a) { return std::isnan(a.v); }
template <class T> bool isinf(const Var<T>& a) { return std::isinf(a.v); }

template <class T>
std::ostream& operator<<(std::ostream& out, const Var<T>& a) {
    return out << a.v;
}

/// The plain value of a tape variable.
template <class T> double value_of(const Var<T>& x) { return value_of(x.v); }

template <> constexpr const char* scalar_name<Var<double>>() { return "var"; }
template <> constexpr const char* scalar_name<Var<float>>() { return "var_float"; }

}  // namespace miras

namespace Eigen {

template <class T>
struct NumTraits<miras::Var<T>> : NumTraits<T> {
    using Real = miras::Var<T>;
    using NonInteger = miras::Var<T>;
    using Nested = miras::Var<T>;
    using Literal = miras::Var<T>;
    enum {
        IsComplex = 0,
        IsInteger = 0,
        IsSigned = 1,
        RequireInitialization = 1,
        ReadCost = 2 * NumTraits<T>::ReadCost,
        AddCost = 4 * NumTraits<T>::AddCost,
        MulCost = 4 * NumTraits<T>::MulCost,
    };
    static Real epsilon() { return Real(NumTraits<T>::epsilon()); }
    static Real dummy_precision() { return Real(NumTraits<T>::dummy_precision()); }
    static Real highest() { return Real(NumTraits<T>::highest()); }
    static Real lowest() { return Real(NumTraits<T>::lowest()); }
    static int digits10() { return NumTraits<T>::digits10(); }
};

template <class T, typename BinaryOp>
struct ScalarBinaryOpTraits<miras::Var<T>, T, BinaryOp> {
    using ReturnType = miras::Var<T>;
};
template <class T, typename BinaryOp>
struct ScalarBinaryOpTraits<T, miras::Var<T>, BinaryOp> {
    using ReturnType = miras::Var<T>;
};

}  // namespace Eigen
