// The six memorisation probes. Each point of a curve draws its data from its own seed, so every
// layer of the same key and value dimensions reads the same keys and values.
#include "miras/tasks/probes.hpp"

#include <cmath>

#include "probe_engine.hpp"

namespace miras::tasks {

using detail::ProbeRandom;
using detail::Tally;
using detail::Trial;

const char* probe_name(Probe probe) {
    switch (probe) {
        case Probe::capacity: return "capacity";
        case Probe::noise: return "noise";
        case Probe::outliers: return "outliers";
        case Probe::recency: return "recency";
        case Probe::overwrite: return "overwrite";
        case Probe::stream: return "stream";
    }
    return "?";
}

std::vector<Probe> all_probes() {
    return {Probe::capacity, Probe::noise, Probe::outliers, Probe::recency, Probe::overwrite, Probe::stream};
}

Probe probe_from_name(const std::string& name) {
    std::string valid;
    for (Probe probe : all_probes()) {
        if (name == probe_name(probe)) return probe;
        valid += valid.empty() ? "" : ", ";
        valid += probe_name(probe);
    }
    throw InputError("probe '" + name + "' is unknown; valid are " + valid);
}

ProbeSuite ProbeSuite::standard(bool quick) {
    ProbeSuite suite;
    if (quick) {
        suite.capacity.loads = {0.25, 0.5, 1, 2, 4, 8};
        suite.noise.sigmas = {0, 0.25, 0.5, 1};
        suite.outliers.fractions = {0, 0.1, 0.25};
        suite.recency.buckets = 4;
        suite.overwrite.rewrites = {1, 2};
        suite.stream.distractors = {0, 2, 8};
    }
    return suite;
}

namespace {

struct LayerShape {
    Index K, V, H;
};

LayerShape shape_of(const ProbedLayer& layer) {
    if (!layer.layer) throw InputError("probed layer '" + layer.name + "' is empty");
    const LayerDims& dims = layer.layer->dims();
    return {dims.key, dims.value, dims.heads};
}

/// Pairs per trial for a load N / K, at least one.
Index pairs_for(double load, Index K, const char* probe) {
    if (!std::isfinite(load) || load <= 0.0) {
        throw InputError(std::string(probe) + " probe load " + std::to_string(load) + " is invalid; valid is N / K > 0");
    }
    return std::max<Index>(1, static_cast<Index>(std::llround(load * static_cast<double>(K))));
}

/// Returns the rows an argmax read chooses among: every unit value of the trial, or the V one-hot rows.
Mat<double> candidates_for(const Mat<double>& values, ValueKind kind) {
    if (kind == ValueKind::one_hot) return Mat<double>::Identity(values.cols(), values.cols());
    return values;
}

}  // namespace

ProbeCurve run_capacity(const ProbedLayer& layer, const CapacityProbe& probe, const ProbeSettings& settings) {
    const auto [K, V, H] = shape_of(layer);
    ProbeCurve curve{Probe::capacity, "N/d_k", {}};
    for (std::size_t p = 0; p < probe.loads.size(); ++p) {
        const Index N = pairs_for(probe.loads[p], K, "capacity");
        ProbeRandom random(detail::point_seed(settings.seed, Probe::capacity, p));
        const Index trials = detail::sequences_for(N, H, settings.min_queries) * H;
        std::vector<Trial> data;
        std::vector<detail::Values> values;
        for (Index i = 0; i < trials; ++i) {
            Mat<double> keys = detail::random_keys(random, N, K, settings.keys);
            values.push_back(detail::random_values(random, N, V, settings.values, 0));
            data.push_back({keys, values.back().rows, keys});
        }
        const auto outputs = detail::write_then_query(layer, data);
        Tally tally;
        for (Index i = 0; i < trials; ++i) {
            const auto& v = values[static_cast<std::size_t>(i)];
            const Mat<double> candidates = candidates_for(v.rows, settings.values);
            for (Index j = 0; j < N; ++j) {
                tally.add(outputs[static_cast<std::size_t>(i)].row(j).transpose(), v.rows.row(j).transpose(), candidates,
                          v.labels[static_cast<std::size_t>(j)]);
            }
        }
        curve.points.push_back(tally.point(static_cast<double>(N) / static_cast<double>(K)));
    }
    return curve;
}

ProbeCurve run_noise(const ProbedLayer& layer, const NoiseProbe& probe, const ProbeSettings& settings) {
    const auto [K, V, H] = shape_of(layer);
    const Index N = pairs_for(probe.load, K, "noise");
    ProbeCurve curve{Probe::noise, "sigma", {}};
    for (std::size_t p = 0; p < probe.sigmas.size(); ++p) {
        const double sigma = probe.sigmas[p];
        if (!std::isfinite(sigma) || sigma < 0.0) {
            throw InputError("noise probe sigma " + std::to_string(sigma) + " is invalid; valid is a finite value >= 0");
        }
        ProbeRandom random(detail::point_seed(settings.seed, Probe::noise, p));
        const Index trials = detail::sequences_for(N, H, settings.min_queries) * H;
        const double spread = sigma / std::sqrt(static_cast<double>(K));
        std::vector<Trial> data;
        std::vector<detail::Values> values;
        for (Index i = 0; i < trials; ++i) {
            Mat<double> keys = detail::random_keys(random, N, K, settings.keys);
            values.push_back(detail::random_values(random, N, V, settings.values, 0));
            Mat<double> queries = keys;
            for (Index j = 0; j < N; ++j) {
                for (Index c = 0; c < K; ++c) queries(j, c) += spread * random.normal();
            }
            data.push_back({keys, values.back().rows, queries});
        }
        const auto outputs = detail::write_then_query(layer, data);
        Tally tally;
        for (Index i = 0; i < trials; ++i) {
            const auto& v = values[static_cast<std::size_t>(i)];
            const Mat<double> candidates = candidates_for(v.rows, settings.values);
            for (Index j = 0; j < N; ++j) {
                tally.add(outputs[static_cast<std::size_t>(i)].row(j).transpose(), v.rows.row(j).transpose(), candidates,
                          v.labels[static_cast<std::size_t>(j)]);
            }
        }
        curve.points.push_back(tally.point(sigma));
    }
    return curve;
}

ProbeCurve run_outliers(const ProbedLayer& layer, const OutlierProbe& probe, const ProbeSettings& settings) {
    const auto [K, V, H] = shape_of(layer);
    const Index N = pairs_for(probe.load, K, "outliers");
    if (!(probe.min_scale > 0.0 && probe.max_scale >= probe.min_scale && std::isfinite(probe.max_scale))) {
        throw InputError("outlier scales [" + std::to_string(probe.min_scale) + ", " + std::to_string(probe.max_scale) +
                         "] are invalid; valid is 0 < min_scale <= max_scale, finite");
    }
    ProbeCurve curve{Probe::outliers, "outlier fraction", {}};
    for (std::size_t p = 0; p < probe.fractions.size(); ++p) {
        const double fraction = probe.fractions[p];
        if (!(fraction >= 0.0 && fraction < 1.0)) {
            throw InputError("outlier fraction " + std::to_string(fraction) + " is invalid; valid is 0 <= fraction < 1");
        }
        const Index outliers = static_cast<Index>(std::llround(fraction * static_cast<double>(N)));
        if (outliers >= N) {
            throw InputError("outlier fraction " + std::to_string(fraction) + " scales all " + std::to_string(N) +
                             " pairs and leaves none to score; valid is a fraction below " +
                             std::to_string((static_cast<double>(N) - 0.5) / static_cast<double>(N)));
        }
        ProbeRandom random(detail::point_seed(settings.seed, Probe::outliers, p));
        const Index trials = detail::sequences_for(N - outliers, H, settings.min_queries) * H;
        std::vector<Trial> data;
        std::vector<detail::Values> values;
        std::vector<std::vector<bool>> scaled;
        for (Index i = 0; i < trials; ++i) {
            Mat<double> keys = detail::random_keys(random, N, K, settings.keys);
            values.push_back(detail::random_values(random, N, V, settings.values, 0));
            std::vector<bool> is_outlier(static_cast<std::size_t>(N), false);
            const std::vector<Index> order = random.permutation(N);
            Mat<double> written = values.back().rows;
            for (Index j = 0; j < outliers; ++j) {
                const Index row = order[static_cast<std::size_t>(j)];
                is_outlier[static_cast<std::size_t>(row)] = true;
                written.row(row) *= random.uniform(probe.min_scale, probe.max_scale);
            }
            values.back().rows = written;
            scaled.push_back(std::move(is_outlier));
            data.push_back({keys, written, keys});
        }
        const auto outputs = detail::write_then_query(layer, data);
        Tally tally;
        for (Index i = 0; i < trials; ++i) {
            const auto& v = values[static_cast<std::size_t>(i)];
            const Mat<double> candidates = candidates_for(v.rows, settings.values);
            for (Index j = 0; j < N; ++j) {
                if (scaled[static_cast<std::size_t>(i)][static_cast<std::size_t>(j)]) continue;
                tally.add(outputs[static_cast<std::size_t>(i)].row(j).transpose(), v.rows.row(j).transpose(), candidates,
                          v.labels[static_cast<std::size_t>(j)]);
            }
        }
        curve.points.push_back(tally.point(fraction));
    }
    return curve;
}

ProbeCurve run_recency(const ProbedLayer& layer, const RecencyProbe& probe, const ProbeSettings& settings) {
    const auto [K, V, H] = shape_of(layer);
    const Index N = pairs_for(probe.load, K, "recency");
    if (probe.buckets < 1) {
        throw InputError("recency bucket count " + std::to_string(probe.buckets) + " is invalid; valid is 1 or more");
    }
    const Index buckets = std::min(probe.buckets, N);

    ProbeRandom random(detail::point_seed(settings.seed, Probe::recency, 0));
    const Index trials = detail::sequences_for(N / buckets, H, settings.min_queries) * H;
    std::vector<Trial> data;
    std::vector<detail::Values> values;
    for (Index i = 0; i < trials; ++i) {
        Mat<double> keys = detail::random_keys(random, N, K, settings.keys);
        values.push_back(detail::random_values(random, N, V, settings.values, 0));
        data.push_back({keys, values.back().rows, keys});
    }
    const auto outputs = detail::write_then_query(layer, data);

    std::vector<Tally> tallies(static_cast<std::size_t>(buckets));
    std::vector<double> age_sum(static_cast<std::size_t>(buckets), 0.0);
    for (Index i = 0; i < trials; ++i) {
        const auto& v = values[static_cast<std::size_t>(i)];
        const Mat<double> candidates = candidates_for(v.rows, settings.values);
        for (Index j = 0; j < N; ++j) {
            const Index age = N - 1 - j;
            const auto bucket = static_cast<std::size_t>(age * buckets / N);
            tallies[bucket].add(outputs[static_cast<std::size_t>(i)].row(j).transpose(), v.rows.row(j).transpose(),
                                candidates, v.labels[static_cast<std::size_t>(j)]);
            age_sum[bucket] += static_cast<double>(age);
        }
    }

    ProbeCurve curve{Probe::recency, "age", {}};
    for (std::size_t b = 0; b < tallies.size(); ++b) {
        curve.points.push_back(tallies[b].point(age_sum[b] / static_cast<double>(tallies[b].count())));
    }
    return curve;
}

ProbeCurve run_overwrite(const ProbedLayer& layer, const OverwriteProbe& probe, const ProbeSettings& settings) {
    const auto [K, V, H] = shape_of(layer);
    const Index N = pairs_for(probe.load, K, "overwrite");
    ProbeCurve curve{Probe::overwrite, "rewrites", {}};
    for (std::size_t p = 0; p < probe.rewrites.size(); ++p) {
        const Index rounds = 1 + probe.rewrites[p];
        if (probe.rewrites[p] < 0) {
            throw InputError("overwrite probe rewrite count " + std::to_string(probe.rewrites[p]) +
                             " is invalid; valid is 0 or more");
        }
        ProbeRandom random(detail::point_seed(settings.seed, Probe::overwrite, p));
        const Index trials = detail::sequences_for(N, H, settings.min_queries) * H;
        std::vector<Trial> data;
        std::vector<Mat<double>> all_values, latest;
        std::vector<std::vector<Index>> labels;
        for (Index i = 0; i < trials; ++i) {
            const Mat<double> keys = detail::random_keys(random, N, K, settings.keys);
            Trial trial{Mat<double>(rounds * N, K), Mat<double>(rounds * N, V), keys};
            Mat<double> every(rounds * N, V), last(N, V);
            std::vector<Index> last_label(static_cast<std::size_t>(N));
            for (Index r = 0; r < rounds; ++r) {
                const detail::Values fresh = detail::random_values(random, N, V, settings.values, r * N);
                const std::vector<Index> order = random.permutation(N);
                every.middleRows(r * N, N) = fresh.rows;
                for (Index j = 0; j < N; ++j) {
                    const Index key = r == 0 ? j : order[static_cast<std::size_t>(j)];
                    trial.write_keys.row(r * N + j) = keys.row(key);
                    trial.write_values.row(r * N + j) = fresh.rows.row(key);
                }
                last = fresh.rows;
                last_label = fresh.labels;
            }
            data.push_back(std::move(trial));
            all_values.push_back(std::move(every));
            latest.push_back(std::move(last));
            labels.push_back(std::move(last_label));
        }
        const auto outputs = detail::write_then_query(layer, data);
        Tally tally;
        for (Index i = 0; i < trials; ++i) {
            const auto s = static_cast<std::size_t>(i);
            const Mat<double> candidates = candidates_for(all_values[s], settings.values);
            for (Index j = 0; j < N; ++j) {
                tally.add(outputs[s].row(j).transpose(), latest[s].row(j).transpose(), candidates,
                          labels[s][static_cast<std::size_t>(j)]);
            }
        }
        curve.points.push_back(tally.point(static_cast<double>(probe.rewrites[p])));
    }
    return curve;
}

ProbeCurve run_stream(const ProbedLayer& layer, const StreamProbe& probe, const ProbeSettings& settings) {
    const auto [K, V, H] = shape_of(layer);
    const Index P = pairs_for(probe.load, K, "stream");
    ProbeCurve curve{Probe::stream, "distractors per pair", {}};
    for (std::size_t p = 0; p < probe.distractors.size(); ++p) {
        const Index D = probe.distractors[p];
        if (D < 0) {
            throw InputError("stream probe distractor count " + std::to_string(D) + " is invalid; valid is 0 or more");
        }
        const Index T = 2 * P * (1 + D);
        std::vector<bool> reads(static_cast<std::size_t>(T), false);
        for (Index j = 0; j < P; ++j) reads[static_cast<std::size_t>(P * (1 + D) + j * (1 + D) + D)] = true;

        ProbeRandom random(detail::point_seed(settings.seed, Probe::stream, p));
        const Index trials = detail::sequences_for(P, H, settings.min_queries) * H;
        std::vector<Trial> data;
        std::vector<detail::Values> values;
        std::vector<std::vector<Index>> requested;
        for (Index i = 0; i < trials; ++i) {
            const Mat<double> keys = detail::random_keys(random, P, K, settings.keys);
            values.push_back(detail::random_values(random, P, V, settings.values, 0));
            const Mat<double> noise_keys = detail::random_keys(random, 2 * P * D, K, KeyKind::sphere);
            const detail::Values noise_values = detail::random_values(random, 2 * P * D, V, settings.values, 0);
            const std::vector<Index> order = random.permutation(P);

            Trial trial{Mat<double>::Zero(T, K), Mat<double>::Zero(T, V), Mat<double>::Zero(T, K)};
            Index t = 0, noise = 0;
            const auto distract = [&] {
                for (Index d = 0; d < D; ++d, ++t, ++noise) {
                    trial.write_keys.row(t) = noise_keys.row(noise);
                    trial.write_values.row(t) = noise_values.rows.row(noise);
                }
            };
            for (Index j = 0; j < P; ++j) {
                trial.write_keys.row(t) = keys.row(j);
                trial.write_values.row(t) = values.back().rows.row(j);
                ++t;
                distract();
            }
            for (Index j = 0; j < P; ++j) {
                distract();
                trial.queries.row(t) = keys.row(order[static_cast<std::size_t>(j)]);
                ++t;
            }
            data.push_back(std::move(trial));
            requested.push_back(order);
        }
        const auto outputs = detail::read_in_stream(layer, data, reads);
        Tally tally;
        for (Index i = 0; i < trials; ++i) {
            const auto s = static_cast<std::size_t>(i);
            const Mat<double> candidates = candidates_for(values[s].rows, settings.values);
            for (Index j = 0; j < P; ++j) {
                const Index pair = requested[s][static_cast<std::size_t>(j)];
                tally.add(outputs[s].row(j).transpose(), values[s].rows.row(pair).transpose(), candidates,
                          values[s].labels[static_cast<std::size_t>(pair)]);
            }
        }
        curve.points.push_back(tally.point(static_cast<double>(D)));
    }
    return curve;
}

ProbeCurve run_probe(Probe probe, const ProbedLayer& layer, const ProbeSuite& suite, const ProbeSettings& settings) {
    switch (probe) {
        case Probe::capacity: return run_capacity(layer, suite.capacity, settings);
        case Probe::noise: return run_noise(layer, suite.noise, settings);
        case Probe::outliers: return run_outliers(layer, suite.outliers, settings);
        case Probe::recency: return run_recency(layer, suite.recency, settings);
        case Probe::overwrite: return run_overwrite(layer, suite.overwrite, settings);
        case Probe::stream: return run_stream(layer, suite.stream, settings);
    }
    throw InputError("unknown probe");
}

}  // namespace miras::tasks
