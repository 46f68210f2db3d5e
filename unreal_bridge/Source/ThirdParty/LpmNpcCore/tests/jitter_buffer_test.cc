// Jitter buffer: which frame is shown for an audio playhead. No server needed.
#include <gtest/gtest.h>

#include <thread>

#include "lpmnpc/jitter_buffer.h"

namespace {

lpmnpc::Frame MakeFrame(uint64_t index, int fps = 30) {
  lpmnpc::Frame f;
  f.index = index;
  f.pts_us = static_cast<int64_t>(index * 1000000 / fps);
  f.width = 2;
  f.height = 2;
  f.stride = 8;
  f.data.assign(16, static_cast<uint8_t>(index));
  return f;
}

TEST(JitterBuffer, NothingIsDueBeforeTheFirstFrameTime) {
  lpmnpc::JitterBuffer jb(8);
  jb.Push(MakeFrame(3));  // pts 100000
  lpmnpc::Frame out;
  EXPECT_FALSE(jb.Pick(99999, &out));
  EXPECT_TRUE(jb.Pick(100000, &out));
  EXPECT_EQ(out.index, 3u);
  EXPECT_EQ(jb.Size(), 0u);
}

TEST(JitterBuffer, PicksTheNewestDueFrameAndSkipsOlderOnes) {
  lpmnpc::JitterBuffer jb(16);
  for (uint64_t i = 0; i < 10; ++i) jb.Push(MakeFrame(i));
  lpmnpc::Frame out;
  // playhead between frame 4 (133333 us) and frame 5 (166666 us)
  ASSERT_TRUE(jb.Pick(150000, &out));
  EXPECT_EQ(out.index, 4u);
  EXPECT_EQ(out.data[0], 4);
  EXPECT_EQ(jb.Skipped(), 4u);  // frames 0..3 were never shown
  // same playhead again: nothing new is due, keep showing frame 4
  EXPECT_FALSE(jb.Pick(150000, &out));
  ASSERT_TRUE(jb.Pick(166666, &out));
  EXPECT_EQ(out.index, 5u);
  EXPECT_EQ(jb.Size(), 4u);
}

TEST(JitterBuffer, OutOfOrderArrivalIsReordered) {
  lpmnpc::JitterBuffer jb(16);
  jb.Push(MakeFrame(2));
  jb.Push(MakeFrame(0));
  jb.Push(MakeFrame(1));
  lpmnpc::Frame out;
  ASSERT_TRUE(jb.Pick(0, &out));
  EXPECT_EQ(out.index, 0u);
  ASSERT_TRUE(jb.Pick(40000, &out));
  EXPECT_EQ(out.index, 1u);
  ASSERT_TRUE(jb.Pick(70000, &out));
  EXPECT_EQ(out.index, 2u);
}

TEST(JitterBuffer, LateFrameAfterANewerOneWasShownIsDropped) {
  lpmnpc::JitterBuffer jb(16);
  jb.Push(MakeFrame(5));
  lpmnpc::Frame out;
  ASSERT_TRUE(jb.Pick(1000000, &out));
  jb.Push(MakeFrame(4));  // arrives after frame 5 was shown: too late
  EXPECT_EQ(jb.Size(), 0u);
  EXPECT_EQ(jb.Skipped(), 1u);
  EXPECT_FALSE(jb.Pick(1000000, &out));
}

TEST(JitterBuffer, CapacityDropsTheOldest) {
  lpmnpc::JitterBuffer jb(4);
  for (uint64_t i = 0; i < 10; ++i) jb.Push(MakeFrame(i));
  EXPECT_EQ(jb.Size(), 4u);
  int64_t earliest = 0;
  ASSERT_TRUE(jb.PeekEarliestPts(&earliest));
  EXPECT_EQ(earliest, MakeFrame(6).pts_us);
  lpmnpc::Frame out;
  ASSERT_TRUE(jb.PickLatest(&out));
  EXPECT_EQ(out.index, 9u);
}

TEST(JitterBuffer, DuplicatePtsReplaces) {
  lpmnpc::JitterBuffer jb(4);
  auto a = MakeFrame(1);
  auto b = MakeFrame(1);
  b.data.assign(16, 77);
  jb.Push(a);
  jb.Push(b);
  EXPECT_EQ(jb.Size(), 1u);
  lpmnpc::Frame out;
  ASSERT_TRUE(jb.PickLatest(&out));
  EXPECT_EQ(out.data[0], 77);
}

TEST(JitterBuffer, ProducerAndConsumerThreads) {
  lpmnpc::JitterBuffer jb(8);
  std::thread producer([&] {
    for (uint64_t i = 0; i < 2000; ++i) jb.Push(MakeFrame(i, 1000));
  });
  int64_t last = -1;
  uint64_t shown = 0;
  lpmnpc::Frame out;
  for (int64_t playhead = 0; playhead <= 2000000; playhead += 500) {
    if (jb.Pick(playhead, &out)) {
      EXPECT_GT(out.pts_us, last);
      EXPECT_LE(out.pts_us, playhead);
      last = out.pts_us;
      ++shown;
    }
  }
  producer.join();
  while (jb.PickLatest(&out)) {
    EXPECT_GT(out.pts_us, last);
    last = out.pts_us;
    ++shown;
  }
  EXPECT_GT(shown, 0u);
  EXPECT_EQ(shown + jb.Skipped(), 2000u);
}

}  // namespace
