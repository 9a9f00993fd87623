// The decode split-KV heuristic (choose_num_splits): fill the CTA slots, then whole waves.
#include "runtime/context.h"

#include <gtest/gtest.h>

namespace attnjit {
namespace {

TEST(SplitHeuristic, OneSplitWhenTheCtasAlreadyFillTheMachine) {
  // b64 x 8 kv heads = 512 CTAs on 132 SMs x 4 slots: one wave, 97% full.
  EXPECT_EQ(choose_num_splits(512, 528, 64, 64), 1);
}

TEST(SplitHeuristic, FillsTheSlotsBeforeCountingWaves) {
  // 512 CTAs on 924 slots: one split leaves 45% of the slots idle. Two fill them (a second wave of
  // 100 CTAs follows), though whole-wave efficiency alone ranks both at 55%: with at most two
  // splits, two. Five fill 2772 slots' waves to 92%.
  EXPECT_EQ(choose_num_splits(512, 924, 128, 2), 2);
  EXPECT_EQ(choose_num_splits(512, 924, 128, 128), 5);
  // 512 CTAs on 660 slots (78%: not filled); two splits fill them, also at 78% per wave.
  EXPECT_EQ(choose_num_splits(512, 660, 128, 2), 2);
  // 1024 CTAs on 1056 slots: filled (97%) at one split.
  EXPECT_EQ(choose_num_splits(1024, 1056, 64, 64), 1);
}

TEST(SplitHeuristic, SmallBatchesSplitAsFarAsTheKeysAllow) {
  // MiMo TP-8 decode: 64 CTAs on 528 slots, 64 tiles: 8 splits give 512 CTAs (97%).
  EXPECT_EQ(choose_num_splits(64, 528, 64, 64), 8);
  // 8 CTAs, 32 tiles: at most 8 splits keep 4 tiles each; the machine stays part idle.
  EXPECT_EQ(choose_num_splits(8, 924, 32, 128), 8);
  // The tile cap.
  EXPECT_EQ(choose_num_splits(8, 924, 4096, 16), 16);
}

TEST(SplitHeuristic, ShortSequencesDoNotSplit) {
  EXPECT_EQ(choose_num_splits(4, 528, 7, 64), 1); // fewer than 8 tiles: a second split would hold 3
  EXPECT_EQ(choose_num_splits(4, 528, 8, 64), 2);
}

} // namespace
} // namespace attnjit
