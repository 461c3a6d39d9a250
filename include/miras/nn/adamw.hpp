// AdamW (Loshchilov and Hutter 2019) in PyTorch's form: p <- p (1 - lr wd), then
// m <- b1 m + (1 - b1) g, v <- b2 v + (1 - b2) g^2, p <- p - lr m_hat / (sqrt(v_hat) + eps) with the
// bias corrections m_hat = m / (1 - b1^t), v_hat = v / (1 - b2^t). Zoology trains with wd = 0.1.
#pragma once

#include <cmath>
#include <vector>

#include "miras/nn/param.hpp"

namespace miras::nn {

struct AdamWConfig {
    double beta1 = 0.9;
    double beta2 = 0.999;
    double eps = 1e-8;
    double weight_decay = 0.1;
};

template <class S>
class AdamW {
public:
    AdamW(std::vector<Param<S>*> params, AdamWConfig config) : params_(std::move(params)), config_(config) {
        if (!(config.beta1 >= 0 && config.beta1 < 1) || !(config.beta2 >= 0 && config.beta2 < 1)) {
            throw ConfigError("AdamW: beta1 = " + std::to_string(config.beta1) + " and beta2 = " +
                              std::to_string(config.beta2) + " must lie in [0, 1)");
        }
        if (!(config.eps > 0) || !(config.weight_decay >= 0)) {
            throw ConfigError("AdamW: eps = " + std::to_string(config.eps) + " must be > 0 and weight_decay = " +
                              std::to_string(config.weight_decay) + " >= 0");
        }
        for (Param<S>* p : params_) {
            m_.push_back(Mat<S>::Zero(p->value.rows(), p->value.cols()));
            v_.push_back(Mat<S>::Zero(p->value.rows(), p->value.cols()));
        }
    }

    /// Applies one update with learning rate `lr` from the accumulated gradients.
    void step(double lr) {
        ++steps_;
        const double c1 = 1 - std::pow(config_.beta1, static_cast<double>(steps_));
        const double c2 = 1 - std::pow(config_.beta2, static_cast<double>(steps_));
        const S b1 = S(config_.beta1), b2 = S(config_.beta2);
        for (std::size_t i = 0; i < params_.size(); ++i) {
            Param<S>& p = *params_[i];
            p.value *= S(1 - lr * config_.weight_decay);
            m_[i] = b1 * m_[i] + (S(1) - b1) * p.grad;
            v_[i] = b2 * v_[i] + (S(1) - b2) * p.grad.cwiseProduct(p.grad);
            p.value.array() -= S(lr) * (m_[i].array() / S(c1)) / ((v_[i].array() / S(c2)).sqrt() + S(config_.eps));
        }
    }

    void zero_grad() {
        for (Param<S>* p : params_) p->zero_grad();
    }

    Index steps() const { return steps_; }

    /// First and second moments m and v, one per parameter in the order of the constructor.
    const std::vector<Mat<S>>& first_moments() const { return m_; }
    const std::vector<Mat<S>>& second_moments() const { return v_; }

    /// Replaces the step count and the moments (to resume from a checkpoint). Raises InputError
    /// when a moment's shape differs from its parameter's.
    void restore(Index steps, std::vector<Mat<S>> m, std::vector<Mat<S>> v) {
        if (steps < 0 || m.size() != params_.size() || v.size() != params_.size()) {
            throw InputError("AdamW restore: " + std::to_string(m.size()) + " and " + std::to_string(v.size()) +
                             " moments at step " + std::to_string(steps) + " for " + std::to_string(params_.size()) +
                             " parameters; need one of each per parameter and a step >= 0");
        }
        for (std::size_t i = 0; i < params_.size(); ++i) {
            expect_same_shape(m[i], params_[i]->value, "AdamW first moment " + std::to_string(i));
            expect_same_shape(v[i], params_[i]->value, "AdamW second moment " + std::to_string(i));
        }
        steps_ = steps;
        m_ = std::move(m);
        v_ = std::move(v);
    }

private:
    std::vector<Param<S>*> params_;
    AdamWConfig config_;
    std::vector<Mat<S>> m_, v_;
    Index steps_ = 0;
};

}  // namespace miras::nn
