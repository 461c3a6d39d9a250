// Dense row-major tensors: an owning Tensor and a non-owning TensorView over caller memory.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "miras/core/error.hpp"

namespace miras {

using Index = std::int64_t;
using Shape = std::vector<Index>;

inline std::string shape_string(const Shape& shape) {
    std::string text = "[";
    for (std::size_t i = 0; i < shape.size(); ++i) {
        if (i > 0) text += ", ";
        text += std::to_string(shape[i]);
    }
    return text + "]";
}

inline Index element_count(const Shape& shape) {
    Index count = 1;
    for (Index extent : shape) count *= extent;
    return count;
}

/// Read-only view of a row-major tensor that someone else owns.
template <class S>
class TensorView {
public:
    TensorView() = default;
    TensorView(const S* data, Shape shape) : data_(data), shape_(std::move(shape)) {}

    const S* data() const { return data_; }
    const Shape& shape() const { return shape_; }
    Index rank() const { return static_cast<Index>(shape_.size()); }
    Index dim(Index axis) const { return shape_[static_cast<std::size_t>(axis)]; }
    Index size() const { return element_count(shape_); }
    /// True when the view has no data to read. A tensor with a zero extent (for example T = 0
    /// tokens) has no elements, so it is a present view even without storage.
    bool empty() const { return data_ == nullptr && size() != 0; }

private:
    const S* data_ = nullptr;
    Shape shape_;
};

/// Owning row-major tensor.
template <class S>
class Tensor {
public:
    Tensor() = default;
    explicit Tensor(Shape shape, S fill = S(0))
        : shape_(std::move(shape)), data_(static_cast<std::size_t>(element_count(shape_)), fill) {}
    Tensor(Shape shape, std::vector<S> data) : shape_(std::move(shape)), data_(std::move(data)) {
        if (static_cast<Index>(data_.size()) != element_count(shape_)) {
            throw InputError("tensor of shape " + shape_string(shape_) + " needs " +
                             std::to_string(element_count(shape_)) + " values, got " +
                             std::to_string(data_.size()));
        }
    }

    S* data() { return data_.data(); }
    const S* data() const { return data_.data(); }
    const Shape& shape() const { return shape_; }
    Index rank() const { return static_cast<Index>(shape_.size()); }
    Index dim(Index axis) const { return shape_[static_cast<std::size_t>(axis)]; }
    Index size() const { return static_cast<Index>(data_.size()); }
    std::vector<S>& values() { return data_; }
    const std::vector<S>& values() const { return data_; }

    S& operator[](Index i) { return data_[static_cast<std::size_t>(i)]; }
    const S& operator[](Index i) const { return data_[static_cast<std::size_t>(i)]; }

    TensorView<S> view() const { return TensorView<S>(data_.data(), shape_); }
    operator TensorView<S>() const { return view(); }

private:
    Shape shape_;
    std::vector<S> data_;
};

/// Converts a tensor to another scalar type, element by element.
template <class To, class From>
Tensor<To> tensor_cast(const TensorView<From>& from) {
    Tensor<To> to(from.shape());
    for (Index i = 0; i < from.size(); ++i) to[i] = To(from.data()[i]);
    return to;
}

}  // namespace miras
