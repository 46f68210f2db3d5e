// Jitter buffer: frames arrive from the network a little early or late; the game shows the frame
// whose presentation time has been reached by its audio playhead.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <limits>
#include <mutex>
#include <utility>

#include "lpmnpc/types.h"

namespace lpmnpc {

// Holds timed items (anything with `int64_t pts_us`) ordered by pts; thread-safe.
//
//   Push(item)        network thread: insert in pts order; an item older than the last one picked
//                     is late and is dropped; over capacity the oldest is dropped.
//   Pick(playhead)    game thread: the newest item with pts <= playhead, or false when none is due
//                     (keep showing the current one). Items before it are skipped (counted).
template <class T>
class TimedBuffer {
 public:
  explicit TimedBuffer(size_t capacity = 16) : capacity_(capacity ? capacity : 1) {}

  void Push(T item) {
    std::lock_guard<std::mutex> lock(mu_);
    if (has_picked_ && item.pts_us <= last_picked_pts_) {
      ++skipped_;
      return;
    }
    auto it = items_.end();
    while (it != items_.begin() && std::prev(it)->pts_us > item.pts_us) --it;
    if (it != items_.begin() && std::prev(it)->pts_us == item.pts_us) {
      *std::prev(it) = std::move(item);  // a duplicate time replaces the older copy
      return;
    }
    items_.insert(it, std::move(item));
    while (items_.size() > capacity_) {
      items_.pop_front();
      ++skipped_;
    }
  }

  bool Pick(int64_t playhead_us, T* out) {
    std::lock_guard<std::mutex> lock(mu_);
    size_t due = 0;
    while (due < items_.size() && items_[due].pts_us <= playhead_us) ++due;
    if (due == 0) return false;
    skipped_ += due - 1;
    for (size_t i = 0; i + 1 < due; ++i) items_.pop_front();
    last_picked_pts_ = items_.front().pts_us;
    has_picked_ = true;
    if (out) *out = std::move(items_.front());
    items_.pop_front();
    return true;
  }

  bool PickLatest(T* out) { return Pick(std::numeric_limits<int64_t>::max(), out); }

  // Earliest pts waiting, or false when empty.
  bool PeekEarliestPts(int64_t* pts) const {
    std::lock_guard<std::mutex> lock(mu_);
    if (items_.empty()) return false;
    *pts = items_.front().pts_us;
    return true;
  }

  void Clear() {
    std::lock_guard<std::mutex> lock(mu_);
    items_.clear();
    has_picked_ = false;
  }

  size_t Size() const {
    std::lock_guard<std::mutex> lock(mu_);
    return items_.size();
  }

  uint64_t Skipped() const {
    std::lock_guard<std::mutex> lock(mu_);
    return skipped_;
  }

 private:
  mutable std::mutex mu_;
  std::deque<T> items_;
  size_t capacity_;
  uint64_t skipped_ = 0;
  int64_t last_picked_pts_ = 0;
  bool has_picked_ = false;
};

using JitterBuffer = TimedBuffer<Frame>;
using RigBuffer = TimedBuffer<RigFrame>;

}  // namespace lpmnpc
