// Training-free memorisation probes: write random key-value pairs into a layer with constant gates
// and read them back. Each read y is scored against its value v three ways: argmax decoding over the
// candidate values (by cosine), cos(y, v), and the mean squared error mean_c (y_c - v_c)^2 (also after the
// least-squares rescale of all reads of a point by one gain). The closed forms they
// are checked against (Hebbian cosine 1 / sqrt(1 + (N - 1) / d), exact delta and least-squares
// recall up to N = d, delta-rule recency) follow the capacity experiments of Schlag, Irie and
// Schmidhuber (2021) and the test-time regression view of Wang, Shi and Fox (2025), in which linear
// attention, the delta rule, MesaNet and softmax attention solve one regression in different ways.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "miras/spec/any_layer.hpp"

namespace miras::tasks {

/// Constant value of each per-token gate during a probe, by gate name (g, eta, beta, ...).
using ProbeGates = std::map<std::string, double>;

/// A layer under test, the name it is reported under and its probe gate values.
struct ProbedLayer {
    std::string name;
    std::shared_ptr<const AnyLayer> layer;
    ProbeGates gates;
};

enum class Probe { capacity, noise, outliers, recency, overwrite, stream };

const char* probe_name(Probe probe);
/// The probe called `name`; raises InputError listing the valid names otherwise.
Probe probe_from_name(const std::string& name);
std::vector<Probe> all_probes();

/// Keys uniform on the unit sphere of R^K, or orthonormal (N <= K pairs per trial).
enum class KeyKind { sphere, orthonormal };
/// Values uniform on the unit sphere of R^V, or one-hot over the V channels.
enum class ValueKind { unit, one_hot };

struct ProbeSettings {
    std::uint64_t seed = 1;
    KeyKind keys = KeyKind::sphere;
    ValueKind values = ValueKind::unit;
    /// Each point of a curve draws enough independent trials for at least this many reads.
    Index min_queries = 512;
};

/// Pairs stored per trial are round(load * K) for the key dimension K of the layer.
struct CapacityProbe { std::vector<double> loads{0.125, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4, 6, 8}; };
/// Query keys k + e with e ~ N(0, sigma^2 / K I), so that |e| is about sigma.
struct NoiseProbe { double load = 0.5; std::vector<double> sigmas{0, 0.1, 0.2, 0.3, 0.5, 0.75, 1}; };
/// round(fraction * N) values scaled by a factor uniform in [min_scale, max_scale]; only the other
/// pairs are scored, so the curve shows how much the outliers disturb the rest.
struct OutlierProbe {
    double load = 0.5;
    std::vector<double> fractions{0, 0.05, 0.1, 0.25};
    double min_scale = 10, max_scale = 100;
};
/// Error against the age of a pair (the number of pairs written after it), in equal age buckets.
struct RecencyProbe { double load = 2; Index buckets = 8; };
/// Every key written 1 + rewrites times with a new value each time; the latest value is expected.
/// The candidates of the argmax are every value written.
struct OverwriteProbe { double load = 0.5; std::vector<Index> rewrites{1, 2, 4}; };
/// The memorisation analogue of MQAR. Each pair is followed by D distractor writes (random keys and
/// values that no query requests). Then the keys are queried in random order, with D distractor
/// writes before each query, and each query reads at its place in the stream.
struct StreamProbe { double load = 0.5; std::vector<Index> distractors{0, 1, 2, 4, 8}; };

struct ProbeSuite {
    CapacityProbe capacity;
    NoiseProbe noise;
    OutlierProbe outliers;
    RecencyProbe recency;
    OverwriteProbe overwrite;
    StreamProbe stream;

    /// The default suite, or a smaller one (fewer points) for a quick look.
    static ProbeSuite standard(bool quick);
};

/// Scores of the reads at one point of a curve.
struct ProbePoint {
    double x = 0;
    Index samples = 0;
    double accuracy = 0;
    double cosine = 0;
    double mse = 0;
    /// The mean squared error of the reads times the one gain c that minimises it over the point's
    /// reads, c = sum <y, v> / sum <y, y>: an error that a global output scale (such as the query
    /// scale of a linear memory) does not change.
    double scaled_mse = 0;
    double gain = 0;
};

struct ProbeCurve {
    Probe probe = Probe::capacity;
    std::string x_name;
    std::vector<ProbePoint> points;
};

ProbeCurve run_capacity(const ProbedLayer& layer, const CapacityProbe& probe, const ProbeSettings& settings);
ProbeCurve run_noise(const ProbedLayer& layer, const NoiseProbe& probe, const ProbeSettings& settings);
ProbeCurve run_outliers(const ProbedLayer& layer, const OutlierProbe& probe, const ProbeSettings& settings);
ProbeCurve run_recency(const ProbedLayer& layer, const RecencyProbe& probe, const ProbeSettings& settings);
ProbeCurve run_overwrite(const ProbedLayer& layer, const OverwriteProbe& probe, const ProbeSettings& settings);
ProbeCurve run_stream(const ProbedLayer& layer, const StreamProbe& probe, const ProbeSettings& settings);

/// Runs one probe of the suite.
ProbeCurve run_probe(Probe probe, const ProbedLayer& layer, const ProbeSuite& suite, const ProbeSettings& settings);

}  // namespace miras::tasks
