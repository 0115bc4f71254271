#include <gtest/gtest.h>

#include "common/Backoff.h"

using namespace std::chrono_literals;

namespace outbox {
namespace {

TEST(Backoff, DoublesFromTheMinimumUpToTheMaximum) {
  Backoff backoff(200ms, 1000ms);
  EXPECT_EQ(backoff.next(), 200ms);
  EXPECT_EQ(backoff.next(), 400ms);
  EXPECT_EQ(backoff.next(), 800ms);
  EXPECT_EQ(backoff.next(), 1000ms);
  EXPECT_EQ(backoff.next(), 1000ms);
  EXPECT_EQ(backoff.peek(), 1000ms);
}

TEST(Backoff, ResetStartsAgainAtTheMinimum) {
  Backoff backoff(500, 30000);
  backoff.next();
  backoff.next();
  backoff.reset();
  EXPECT_EQ(backoff.next(), 500ms);
}

TEST(Backoff, AfterFailuresIsZeroThenDoubling) {
  Backoff backoff(100ms, 10000ms);
  EXPECT_EQ(backoff.afterFailures(0), 0ms);
  EXPECT_EQ(backoff.afterFailures(1), 100ms);
  EXPECT_EQ(backoff.afterFailures(2), 200ms);
  EXPECT_EQ(backoff.afterFailures(5), 1600ms);
  EXPECT_EQ(backoff.afterFailures(1000000), 10000ms);  // no overflow, however many
}

TEST(Backoff, NeverOverflowsNearTheTopOfTheRange) {
  Backoff backoff(std::chrono::milliseconds(1), std::chrono::milliseconds::max());
  for (int i = 0; i < 200; ++i) EXPECT_GT(backoff.next().count(), 0);
  EXPECT_EQ(backoff.peek(), std::chrono::milliseconds::max());
}

TEST(Backoff, AMaximumBelowTheMinimumIsTheMinimum) {
  Backoff backoff(1000ms, 10ms);
  EXPECT_EQ(backoff.next(), 1000ms);
  EXPECT_EQ(backoff.next(), 1000ms);
}

}  // namespace
}  // namespace outbox
