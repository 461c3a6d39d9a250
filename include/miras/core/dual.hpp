// Forward-mode dual numbers: value plus one directional derivative, usable as an Eigen scalar.
//
// Every component is templated on its scalar, so evaluating it on Dual<double> yields the
// derivative of any output along a chosen input direction. Tests compare these derivatives with
// central finite differences; training uses them for the second-order terms of inner updates.
#pragma once

#include <cmath>
#include <ostream>
#include <type_traits>

#include <Eigen/Core>

namespace miras {

template <class T>
struct Dual {
    T v{0};  // value
    T d{0};  // derivative along the seeded direction

    Dual() = default;
    template <class A, std::enable_if_t<std::is_arithmetic_v<A>, int> = 0>
    Dual(A value) : v(static_cast<T>(value)), d(0) {}
    Dual(T value, T derivative) : v(value), d(derivative) {}

    Dual& operator+=(const Dual& o) { d += o.d; v += o.v; return *this; }
    Dual& operator-=(const Dual& o) { d -= o.d; v -= o.v; return *this; }
    Dual& operator*=(const Dual& o) { d = d * o.v + v * o.d; v *= o.v; return *this; }
    Dual& operator/=(const Dual& o) { d = (d * o.v - v * o.d) / (o.v * o.v); v /= o.v; return *this; }
};

template <class T> Dual<T> operator+(Dual<T> a, const Dual<T>& b) { return a += b; }
template <class T> Dual<T> operator-(Dual<T> a, const Dual<T>& b) { return a -= b; }
template <class T> Dual<T> operator*(Dual<T> a, const Dual<T>& b) { return a *= b; }
template <class T> Dual<T> operator/(Dual<T> a, const Dual<T>& b) { return a /= b; }
template <class T> Dual<T> operator-(const Dual<T>& a) { return {-a.v, -a.d}; }
template <class T> Dual<T> operator+(const Dual<T>& a) { return a; }

#define MIRAS_DUAL_MIXED_OP(op)                                                               \
    template <class T, class A, std::enable_if_t<std::is_arithmetic_v<A>, int> = 0>           \
    Dual<T> operator op(const Dual<T>& a, A b) { return a op Dual<T>(b); }                    \
    template <class T, class A, std::enable_if_t<std::is_arithmetic_v<A>, int> = 0>           \
    Dual<T> operator op(A a, const Dual<T>& b) { return Dual<T>(a) op b; }
MIRAS_DUAL_MIXED_OP(+)
MIRAS_DUAL_MIXED_OP(-)
MIRAS_DUAL_MIXED_OP(*)
MIRAS_DUAL_MIXED_OP(/)
#undef MIRAS_DUAL_MIXED_OP

#define MIRAS_DUAL_COMPARE(op)                                                                \
    template <class T> bool operator op(const Dual<T>& a, const Dual<T>& b) { return a.v op b.v; } \
    template <class T, class A, std::enable_if_t<std::is_arithmetic_v<A>, int> = 0>           \
    bool operator op(const Dual<T>& a, A b) { return a.v op static_cast<T>(b); }              \
    template <class T, class A, std::enable_if_t<std::is_arithmetic_v<A>, int> = 0>           \
    bool operator op(A a, const Dual<T>& b) { return static_cast<T>(a) op b.v; }
MIRAS_DUAL_COMPARE(<)
MIRAS_DUAL_COMPARE(<=)
MIRAS_DUAL_COMPARE(>)
MIRAS_DUAL_COMPARE(>=)
MIRAS_DUAL_COMPARE(==)
MIRAS_DUAL_COMPARE(!=)
#undef MIRAS_DUAL_COMPARE

template <class T> Dual<T> exp(const Dual<T>& a) { T e = std::exp(a.v); return {e, e * a.d}; }
template <class T> Dual<T> log(const Dual<T>& a) { return {std::log(a.v), a.d / a.v}; }
template <class T> Dual<T> log1p(const Dual<T>& a) { return {std::log1p(a.v), a.d / (T(1) + a.v)}; }
template <class T> Dual<T> expm1(const Dual<T>& a) { return {std::expm1(a.v), std::exp(a.v) * a.d}; }
template <class T> Dual<T> sqrt(const Dual<T>& a) {
    T s = std::sqrt(a.v);
    return {s, s > T(0) ? a.d / (T(2) * s) : T(0)};
}
template <class T> Dual<T> abs(const Dual<T>& a) { return a.v < T(0) ? -a : a; }
template <class T> Dual<T> fabs(const Dual<T>& a) { return abs(a); }
template <class T> Dual<T> tanh(const Dual<T>& a) { T t = std::tanh(a.v); return {t, (T(1) - t * t) * a.d}; }
template <class T> Dual<T> sin(const Dual<T>& a) { return {std::sin(a.v), std::cos(a.v) * a.d}; }
template <class T> Dual<T> cos(const Dual<T>& a) { return {std::cos(a.v), -std::sin(a.v) * a.d}; }
template <class T> Dual<T> erf(const Dual<T>& a) {
    const T two_over_sqrt_pi = T(1.1283791670955126);
    return {std::erf(a.v), two_over_sqrt_pi * std::exp(-a.v * a.v) * a.d};
}
template <class T> Dual<T> pow(const Dual<T>& a, T p) {
    T value = std::pow(a.v, p);
    return {value, p * std::pow(a.v, p - T(1)) * a.d};
}
template <class T> Dual<T> pow(const Dual<T>& a, int p) { return pow(a, static_cast<T>(p)); }
template <class T> Dual<T> max(const Dual<T>& a, const Dual<T>& b) { return a.v >= b.v ? a : b; }
template <class T> Dual<T> min(const Dual<T>& a, const Dual<T>& b) { return a.v <= b.v ? a : b; }
template <class T> bool isfinite(const Dual<T>& a) { return std::isfinite(a.v) && std::isfinite(a.d); }
template <class T> bool isnan(const Dual<T>& a) { return std::isnan(a.v) || std::isnan(a.d); }
template <class T> bool isinf(const Dual<T>& a) { return std::isinf(a.v) || std::isinf(a.d); }

template <class T>
std::ostream& operator<<(std::ostream& out, const Dual<T>& a) {
    return out << a.v << " + " << a.d << "e";
}

/// The plain value of a scalar: itself for float and double, the value part of a dual number.
inline double value_of(double x) { return x; }
inline double value_of(float x) { return static_cast<double>(x); }
template <class T> double value_of(const Dual<T>& x) { return value_of(x.v); }

/// The derivative part of a dual number.
template <class T> T derivative_of(const Dual<T>& x) { return x.d; }

}  // namespace miras

namespace Eigen {

template <class T>
struct NumTraits<miras::Dual<T>> : NumTraits<T> {
    using Real = miras::Dual<T>;
    using NonInteger = miras::Dual<T>;
    using Nested = miras::Dual<T>;
    using Literal = miras::Dual<T>;
    enum {
        IsComplex = 0,
        IsInteger = 0,
        IsSigned = 1,
        RequireInitialization = 1,
        ReadCost = 2 * NumTraits<T>::ReadCost,
        AddCost = 2 * NumTraits<T>::AddCost,
        MulCost = 3 * NumTraits<T>::MulCost,
    };
    static Real epsilon() { return Real(NumTraits<T>::epsilon()); }
    static Real dummy_precision() { return Real(NumTraits<T>::dummy_precision()); }
    static Real highest() { return Real(NumTraits<T>::highest()); }
    static Real lowest() { return Real(NumTraits<T>::lowest()); }
    static int digits10() { return NumTraits<T>::digits10(); }
};

template <class T, typename BinaryOp>
struct ScalarBinaryOpTraits<miras::Dual<T>, T, BinaryOp> {
    using ReturnType = miras::Dual<T>;
};
template <class T, typename BinaryOp>
struct ScalarBinaryOpTraits<T, miras::Dual<T>, BinaryOp> {
    using ReturnType = miras::Dual<T>;
};

}  // namespace Eigen
