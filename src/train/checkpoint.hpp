// Training checkpoints: the parameters, the AdamW moments and a JSON record of everything else
// (step, data position, random state, evaluations so far) in one binary file, written under a
// temporary name and renamed into place.
//
// Layout: the 16 bytes "MIRAS-CKPT-v1\n\0\0", the JSON length (uint64) and the JSON text, then the
// scalar size (uint64, 4 or 8). The values of every parameter follow, then every first moment, then
// every second moment, each row-major and in the order of the model's params(). The file ends with
// the FNV-1a 64 hash of all bytes before it. Integers and scalars are in the byte order of the machine that wrote the
// file; a checkpoint is meant to be resumed on the machine (or kind of machine) that wrote it.
#pragma once

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/atomic_file.hpp"
#include "miras/core/error.hpp"
#include "miras/nn/param.hpp"

namespace miras::train {

inline constexpr char checkpoint_magic[16] = "MIRAS-CKPT-v1\n";

namespace detail {

/// FNV-1a, 64-bit (Fowler, Noll and Vo).
inline std::uint64_t fnv1a(const std::string& bytes) {
    std::uint64_t hash = 0xcbf29ce484222325ull;
    for (unsigned char c : bytes) {
        hash ^= c;
        hash *= 0x100000001b3ull;
    }
    return hash;
}

inline void append_u64(std::string& out, std::uint64_t x) { out.append(reinterpret_cast<const char*>(&x), sizeof x); }

}  // namespace detail

/// The arrays of a checkpoint in the training scalar type.
template <class S>
struct CheckpointArrays {
    std::vector<Mat<S>> params, first_moments, second_moments;
};

/// Writes `meta` and the arrays to `path` through a temporary file and a rename.
template <class S>
void write_checkpoint(const std::filesystem::path& path, const nlohmann::json& meta, const CheckpointArrays<S>& arrays) {
    nlohmann::json record = meta;
    record["shapes"] = nlohmann::json::array();
    for (const auto& p : arrays.params) record["shapes"].push_back({p.rows(), p.cols()});
    const std::string text = record.dump();

    std::string bytes(checkpoint_magic, sizeof checkpoint_magic);
    detail::append_u64(bytes, text.size());
    bytes += text;
    detail::append_u64(bytes, sizeof(S));
    for (const auto* group : {&arrays.params, &arrays.first_moments, &arrays.second_moments}) {
        for (const Mat<S>& m : *group) bytes.append(reinterpret_cast<const char*>(m.data()), sizeof(S) * m.size());
    }
    detail::append_u64(bytes, detail::fnv1a(bytes));

    write_file_atomically(path, bytes);
}

/// Reads a checkpoint written by write_checkpoint. Raises InputError naming the file when it is
/// truncated, corrupt, of another scalar type, or when a parameter's shape differs from `shapes`.
template <class S>
nlohmann::json read_checkpoint(const std::filesystem::path& path, const std::vector<std::pair<Index, Index>>& shapes,
                               CheckpointArrays<S>& arrays) {
    const std::string where = "checkpoint '" + path.string() + "'";
    std::ifstream file(path, std::ios::binary);
    if (!file) throw InputError(where + " cannot be opened");
    const std::string bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    const auto fail = [&](const std::string& what) -> void {
        throw InputError(where + " is invalid: " + what + "; delete it to restart that learning rate from step 0");
    };

    std::size_t at = 0;
    const auto take = [&](std::size_t n) {
        if (bytes.size() < at + n) fail("the file ends early (truncated)");
        const std::size_t start = at;
        at += n;
        return start;
    };
    const auto take_u64 = [&] {
        std::uint64_t x = 0;
        std::memcpy(&x, bytes.data() + take(sizeof x), sizeof x);
        return x;
    };

    if (bytes.compare(take(sizeof checkpoint_magic), sizeof checkpoint_magic, checkpoint_magic, sizeof checkpoint_magic) != 0) {
        fail("it does not start with the checkpoint signature");
    }
    if (bytes.size() < sizeof(std::uint64_t) * 3 + sizeof checkpoint_magic) fail("the file ends early (truncated)");
    std::uint64_t stored_hash = 0;
    std::memcpy(&stored_hash, bytes.data() + bytes.size() - sizeof stored_hash, sizeof stored_hash);
    if (detail::fnv1a(bytes.substr(0, bytes.size() - sizeof stored_hash)) != stored_hash) {
        fail("its hash does not match its content (truncated or modified)");
    }

    const std::uint64_t text_size = take_u64();
    if (text_size > bytes.size()) fail("the JSON length is larger than the file");
    nlohmann::json meta;
    try {
        meta = nlohmann::json::parse(bytes.substr(take(text_size), text_size));
    } catch (const nlohmann::json::exception& e) {
        fail(std::string("its JSON record does not parse: ") + e.what());
    }
    const std::uint64_t scalar_size = take_u64();
    if (scalar_size != sizeof(S)) {
        fail("it holds " + std::to_string(scalar_size * 8) + "-bit values, the run uses " +
             std::to_string(sizeof(S) * 8) + "-bit values (--precision)");
    }
    const auto& recorded = meta.at("shapes");
    if (recorded.size() != shapes.size()) {
        fail(std::to_string(recorded.size()) + " parameters, the model has " + std::to_string(shapes.size()));
    }
    for (std::size_t i = 0; i < shapes.size(); ++i) {
        if (recorded[i][0].get<Index>() != shapes[i].first || recorded[i][1].get<Index>() != shapes[i].second) {
            fail("parameter " + std::to_string(i) + " is " + recorded[i].dump() + ", the model has [" +
                 std::to_string(shapes[i].first) + "," + std::to_string(shapes[i].second) + "]");
        }
    }
    for (auto* group : {&arrays.params, &arrays.first_moments, &arrays.second_moments}) {
        group->clear();
        for (const auto& [rows, cols] : shapes) {
            Mat<S> m(rows, cols);
            std::memcpy(m.data(), bytes.data() + take(sizeof(S) * static_cast<std::size_t>(m.size())), sizeof(S) * m.size());
            group->push_back(std::move(m));
        }
    }
    if (at + sizeof stored_hash != bytes.size()) fail("it has bytes after the last array");
    return meta;
}

}  // namespace miras::train
