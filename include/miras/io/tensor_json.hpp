// The JSON tensor format: {"shape": [...], "data": [flat row-major values]}, and the golden-file
// layout that wraps named input and output tensors of a reference run.
#pragma once

#include <fstream>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "miras/core/error.hpp"
#include "miras/core/tensor.hpp"

namespace miras::io {

/// Reads a tensor object, naming `where` (a JSON pointer or a field name) in every error.
template <class S>
Tensor<S> tensor_from_json(const nlohmann::json& j, const std::string& where) {
    if (!j.is_object() || !j.contains("shape") || !j.contains("data")) {
        throw InputError(where + ": expected a tensor object {\"shape\": [...], \"data\": [...]}");
    }
    const auto& shape_json = j.at("shape");
    const auto& data_json = j.at("data");
    if (!shape_json.is_array()) throw InputError(where + "/shape: expected an array of non-negative integers");
    Shape shape;
    for (std::size_t i = 0; i < shape_json.size(); ++i) {
        if (!shape_json[i].is_number_integer() || shape_json[i].get<long long>() < 0) {
            throw InputError(where + "/shape/" + std::to_string(i) + ": expected a non-negative integer, found " +
                             shape_json[i].dump());
        }
        shape.push_back(shape_json[i].get<Index>());
    }
    if (!data_json.is_array()) throw InputError(where + "/data: expected an array of numbers");
    if (static_cast<Index>(data_json.size()) != element_count(shape)) {
        throw InputError(where + ": shape " + shape_string(shape) + " needs " + std::to_string(element_count(shape)) +
                         " values, data has " + std::to_string(data_json.size()));
    }
    std::vector<S> data;
    data.reserve(data_json.size());
    for (std::size_t i = 0; i < data_json.size(); ++i) {
        if (!data_json[i].is_number()) {
            throw InputError(where + "/data/" + std::to_string(i) + ": expected a number, found " + data_json[i].dump());
        }
        data.push_back(static_cast<S>(data_json[i].get<double>()));
    }
    return Tensor<S>(std::move(shape), std::move(data));
}

template <class S>
nlohmann::json tensor_to_json(const TensorView<S>& tensor) {
    nlohmann::json j;
    j["shape"] = tensor.shape();
    auto& data = j["data"] = nlohmann::json::array();
    for (Index i = 0; i < tensor.size(); ++i) data.push_back(static_cast<double>(tensor.data()[i]));
    return j;
}

/// Parses a whole JSON file, naming the file in the error.
inline nlohmann::json read_json_file(const std::string& path) {
    std::ifstream in(path);
    if (!in) throw InputError("cannot open '" + path + "' for reading");
    try {
        return nlohmann::json::parse(in);
    } catch (const nlohmann::json::parse_error& e) {
        throw InputError("'" + path + "' is not valid JSON: " + e.what());
    }
}

}  // namespace miras::io
