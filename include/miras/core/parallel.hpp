// A parallel loop over independent tasks. Each task runs on exactly one thread and tasks share no
// results, so the outcome does not depend on the thread count or on the order tasks are taken.
#pragma once

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "miras/core/tensor.hpp"

namespace miras {

/// Runs body(i) for i in [0, count) on up to `threads` threads (the caller's thread included).
/// The first exception a task throws is rethrown after every thread has finished.
template <class F>
void parallel_for(Index count, int threads, F&& body) {
    const Index workers = std::min<Index>(std::max(threads, 1), count);
    if (workers <= 1) {
        for (Index i = 0; i < count; ++i) body(i);
        return;
    }
    std::atomic<Index> next{0};
    std::exception_ptr failure;
    std::mutex failure_mutex;
    const auto work = [&] {
        for (Index i = next.fetch_add(1); i < count; i = next.fetch_add(1)) {
            try {
                body(i);
            } catch (...) {
                std::lock_guard<std::mutex> lock(failure_mutex);
                if (!failure) failure = std::current_exception();
                next.store(count);
            }
        }
    };
    std::vector<std::thread> pool;
    pool.reserve(static_cast<std::size_t>(workers - 1));
    for (Index w = 1; w < workers; ++w) pool.emplace_back(work);
    work();
    for (auto& thread : pool) thread.join();
    if (failure) std::rethrow_exception(failure);
}

}  // namespace miras
