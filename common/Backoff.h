#pragma once
// Exponential backoff between retries of one operation (connecting, re-reading stored offsets, ...): the first
// wait is `min`, each further failure doubles it, up to `max`; success resets it. Pure logic: the caller waits.

#include <algorithm>
#include <chrono>

namespace outbox {

class Backoff {
 public:
  Backoff(std::chrono::milliseconds min, std::chrono::milliseconds max) : min_(min), max_(std::max(min, max)) {}
  Backoff(int minMs, int maxMs) : Backoff(std::chrono::milliseconds(minMs), std::chrono::milliseconds(maxMs)) {}

  // The wait before the next attempt; the one after it doubles (capped at max).
  std::chrono::milliseconds next() {
    std::chrono::milliseconds wait = current_;
    current_ = current_ >= max_ / 2 ? max_ : current_ * 2;
    return wait;
  }
  // What next() would return, without advancing.
  std::chrono::milliseconds peek() const { return current_; }
  void reset() { current_ = min_; }

  // The wait after `failures` failures in a row: 0 for none, then min, 2 min, 4 min ... capped at max.
  std::chrono::milliseconds afterFailures(int failures) const {
    if (failures <= 0) return std::chrono::milliseconds(0);
    std::chrono::milliseconds wait = min_;
    for (int i = 1; i < failures && wait < max_; ++i) wait = wait >= max_ / 2 ? max_ : wait * 2;
    return std::min(wait, max_);
  }

 private:
  std::chrono::milliseconds min_;
  std::chrono::milliseconds max_;
  std::chrono::milliseconds current_ = min_;
};

}  // namespace outbox
