// The registry table (every memory's entries gathered), the names of the registered component
// types, and the explanation of an invalid combination.
#include "registry.hpp"

#include <algorithm>

#include "miras/layer/traits.hpp"
#include "miras/spec/spec.hpp"

namespace miras::spec_registry {

const std::vector<Entry>& all_entries() {
    static const std::vector<Entry> table = [] {
        std::vector<Entry> entries;
        hana::for_each(memory_types, [&](auto memory) {
            using M = typename decltype(memory)::type;
            hana::for_each(bias_types, [&](auto bias) {
                using B = typename decltype(bias)::type;
                if constexpr (valid_count<M, B>() > 0) {
                    hana::for_each(hana::make_range(hana::int_c<0>, hana::int_c<registry_parts<M, B>>), [&](auto part) {
                        for (auto& entry : entries_for<M, B, decltype(part)::value>()) entries.push_back(std::move(entry));
                    });
                }
            });
        });
        return entries;
    }();
    return table;
}

namespace {

/// The rules of combination_rules for one name tuple, found by walking the whole product.
struct Rules {
    bool found = false;
    bool memory_matches_algorithm = true;
    bool algorithm_supports_memory = true;
    bool algorithm_supports_bias = true;
    bool deep_memory_has_gradient_algorithm = true;
    bool retention_finished_by_algorithm = true;
    bool valid = true;
    bool registered = true;
};

Rules rules_for(const std::string& memory, const std::string& bias, const std::string& retention,
                const std::string& algorithm) {
    Rules rules;
    const auto product =
        hana::cartesian_product(hana::make_tuple(memory_types, bias_types, retention_types, algorithm_types));
    hana::for_each(product, [&](auto combination) {
        using M = typename decltype(+hana::at_c<0>(combination))::type;
        using B = typename decltype(+hana::at_c<1>(combination))::type;
        using R = typename decltype(+hana::at_c<2>(combination))::type;
        using A = typename decltype(+hana::at_c<3>(combination))::type;
        if (memory != M::name || bias != B::name || retention != R::name || algorithm != A::name) return;
        using C = combination_rules<M, B, R, A>;
        rules.found = true;
        rules.memory_matches_algorithm = C::memory_matches_algorithm;
        rules.algorithm_supports_memory = C::algorithm_supports_memory;
        rules.algorithm_supports_bias = C::algorithm_supports_bias;
        rules.deep_memory_has_gradient_algorithm = C::deep_memory_has_gradient_algorithm;
        rules.retention_finished_by_algorithm = C::retention_finished_by_algorithm;
        rules.valid = is_valid_combination_v<M, B, R, A>;
        rules.registered = registered_v<M, B, R, A>;
    });
    return rules;
}

template <class List>
std::vector<std::string> names_of(List list) {
    std::vector<std::string> names;
    hana::for_each(list, [&](auto type) { names.emplace_back(decltype(type)::type::name); });
    return names;
}

}  // namespace

Clash combination_clash(const std::string& memory, const std::string& bias, const std::string& retention,
                        const std::string& algorithm) {
    const Rules rules = rules_for(memory, bias, retention, algorithm);
    const std::string pair = "algorithm.type '" + algorithm + "' with ";
    if (!rules.found) return {};
    if (!rules.memory_matches_algorithm) {
        if (memory == "kv_cache") {
            return {"/algorithm/type", pair + "memory.type 'kv_cache': the kv_cache memory is solved only by the "
                                              "nonparametric algorithm; valid is algorithm.type 'nonparametric'"};
        }
        return {"/algorithm/type", pair + "memory.type '" + memory +
                                       "': the nonparametric algorithm needs memory.type 'kv_cache'"};
    }
    if (!rules.algorithm_supports_memory) {
        return {"/algorithm/type", pair + "memory.type '" + memory + "': the " + algorithm +
                                       " algorithm has a closed form only for memory.type 'matrix'"};
    }
    if (!rules.algorithm_supports_bias) {
        return {"/algorithm/type", pair + "attentional_bias.type '" + bias + "': the " + algorithm +
                                       " algorithm solves the l2 regression; valid is attentional_bias.type 'l2'"};
    }
    if (!rules.deep_memory_has_gradient_algorithm) {
        return {"/algorithm/type", pair + "memory.type '" + memory + "': the mlp memory's gradient depends on its "
                                       "weights, so only the algorithms that take it at stored weights train it; valid "
                                       "is algorithm.type 'minibatch_gd' or 'momentum'"};
    }
    if (!rules.retention_finished_by_algorithm) {
        return {"/algorithm/type", pair + "retention.type '" + retention + "': the mirror retention maps the memory "
                                       "back after each gradient step; valid is algorithm.type 'gd', 'minibatch_gd' "
                                       "or 'momentum'"};
    }
    if (!rules.valid) {
        return {"/algorithm/type", pair + "memory.type '" + memory + "', attentional_bias.type '" + bias +
                                       "' and retention.type '" + retention + "' is not a valid combination; `miras list` "
                                       "shows the valid ones"};
    }
    if (!rules.registered) {
        return {"/algorithm/type", pair + "memory.type '" + memory + "', attentional_bias.type '" + bias +
                                       "' and retention.type '" + retention + "' is valid but not compiled into this "
                                       "build; configure with -DMIRAS_REGISTRY_FULL=ON to register every valid "
                                       "combination",
                true};
    }
    return {};
}

}  // namespace miras::spec_registry

namespace miras {

std::vector<std::string> registered_combinations() {
    std::vector<std::string> keys;
    for (const auto& entry : spec_registry::all_entries()) keys.push_back(entry.key());
    std::sort(keys.begin(), keys.end());
    return keys;
}

std::vector<std::string> component_types(const std::string& role) {
    using namespace spec_registry;
    if (role == "memory") return names_of(memory_types);
    if (role == "attentional_bias") return names_of(bias_types);
    if (role == "retention") return names_of(retention_types);
    if (role == "algorithm") return names_of(algorithm_types);
    return {};
}

std::unique_ptr<AnyLayer> build_layer(const LayerSpec& spec) {
    const nlohmann::json& j = spec.json;
    const auto type = [&](const char* section) { return j.at(section).at("type").get<std::string>(); };
    const std::string key = type("memory") + "/" + type("attentional_bias") + "/" + type("retention") + "/" +
                            type("algorithm");
    for (const auto& entry : spec_registry::all_entries()) {
        if (entry.key() == key) {
            try {
                return entry.build(j);
            } catch (const ConfigError& e) {
                throw SpecError("", e.what());
            }
        }
    }
    throw SpecError("", "the combination " + key + " is not registered");
}

}  // namespace miras
