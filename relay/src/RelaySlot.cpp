// The slot's life across connections (README "High availability"): finding or creating it, telling a lost slot
// from a new one by the relay's checkpoint in Kafka, recording a gap, and noticing that the server is not the one
// the relay streamed from before (a promoted standby: another timeline; another cluster: another system).

#include <fmt/format.h>
#include <poll.h>

#include <nlohmann/json.hpp>

#include "common/Log.h"
#include "common/UnixTime.h"
#include "src/ProgressStore.h"
#include "src/Relay.h"

namespace outbox {

namespace {
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
constexpr auto kGapRecordBound = std::chrono::seconds(30);
}  // namespace

std::string Relay::checkpointKey(const std::string& database) const {
  if (exactlyOnce() && !config_.kafka.transactionalId.empty()) return config_.kafka.transactionalId;
  return "outbox-relay." + database + "." + config_.source.slot;
}

std::optional<ProgressRecord> Relay::loadProgress(const std::string& key, bool& gaveUp) {
  try {
    ProgressStore store(config_.kafka, key);
    return store.load(
        [this] {
          keepAlive();
          pollKafka();
          return !stopRequested() && !failedStatus_;
        },
        gaveUp);
  } catch (const SetupError&) {
    throw;
  } catch (const std::runtime_error& e) {
    throw ReplicationError(e.what());  // Kafka unreachable: retried with the reconnect backoff
  }
}

std::optional<Lsn> Relay::prepareSlot(const ServerIdentity& server, bool& recreated) {
  recreated = false;
  std::optional<ReplicationStream::SlotState> slot = stream_->findSlot();
  if (slot && slot->invalidated.empty()) return slot->confirmedFlush;

  // Missing (new only if this relay never streamed from it: neither this process nor its checkpoint says so), or
  // invalidated by the server: lost either way.
  std::optional<SlotLoss> loss;
  if (slot) {
    Lsn from = std::max(slot->confirmedFlush, streamedFromSlot_ ? confirmedLsn() : Lsn());
    loss = SlotLoss{server.systemId, static_cast<uint32_t>(std::max(0, server.timeline)), from, "",
                    "as the server invalidated it (" + slot->invalidated +
                        (slot->invalidated == "wal_removed"
                             ? ": the WAL it needed was removed, past max_slot_wal_keep_size"
                             : "") +
                        ")"};
  } else if (streamedFromSlot_ && knownServer_) {
    loss = SlotLoss{knownServer_->systemId, static_cast<uint32_t>(std::max(0, knownServer_->timeline)),
                    confirmedLsn(), "", "while this relay was streaming from it"};
  } else {
    bool gaveUp = false;
    std::string key = checkpointKey(server.database);
    std::optional<ProgressRecord> checkpoint = loadProgress(key, gaveUp);
    if (gaveUp) return std::nullopt;
    if (checkpoint) {
      loss = SlotLoss{checkpoint->systemId, checkpoint->timeline, checkpoint->endLsn, checkpoint->time,
                      "while no relay was streaming from it (the relay's checkpoint in Kafka topic \"" +
                          config_.kafka.progressTopic + "\", key \"" + key + "\", says it existed)"};
    }
  }
  if (!loss) {
    if (!config_.source.createSlot) {
      throw SetupError("replication slot \"" + config_.source.slot +
                       "\" does not exist and source.create_slot is false: run `" + stream_->createSlotSql() +
                       "` in database " + server.database);
    }
    return stream_->createSlot();
  }

  metrics_.slotsLost.Increment();
  std::string gap = fmt::format(
      "replication slot \"{}\" {} {}: events committed after {} (the last position confirmed, timeline {} "
      "of system {}{}) may be missing from Kafka ({}; this server: "
      "timeline {} of system {}, WAL at {})",
      config_.source.slot, slot ? "is lost" : "disappeared", loss->how, loss->lastConfirmed.toString(), loss->timeline, loss->systemId,
      loss->time.empty() ? "" : ", at " + loss->time,
      slot ? "it can never stream again" : "dropped, or a failover to a server without it", server.timeline, server.systemId, server.xlogPos.toString());
  if (config_.source.onSlotLost == SourceConfig::OnSlotLost::Fail) {
    throw SlotLostError(gap + ". Not re-creating it. To continue deliberately: set source.on_slot_lost = \"recreate\" "
                              "(the relay creates the slot at the current WAL position and records the gap on the "
                              "dead-letter topic), or " + std::string(slot ? "drop it and " : "") + "create the slot by hand (" +
                        stream_->createSlotSql() + " in database " + server.database +
                        "); then republish what is missing from the outbox table (README \"High availability\")");
  }
  // The gap record first: once the slot exists again, nothing would tell the next start that it was lost.
  publishGapRecord(*loss, server);
  if (slot) stream_->dropSlot();
  Lsn start = stream_->createSlot();
  log::warn("{}. Re-created it (source.on_slot_lost = \"recreate\"), starting at {}: the events committed between "
            "{} and {} were not relayed; the gap record is on the dead-letter topic \"{}\"",
            gap, start.toString(), loss->lastConfirmed.toString(), start.toString(), config_.deadLetterTopic);
  recreated = true;
  return start;
}

void Relay::publishGapRecord(const SlotLoss& loss, const ServerIdentity& server) {
  std::string key = checkpointKey(server.database);
  nlohmann::json value = {{"kind", "slot_lost"},
                          {"slot", config_.source.slot},
                          {"database", server.database},
                          {"system_id", server.systemId},
                          {"timeline", server.timeline},
                          {"last_confirmed_lsn", loss.lastConfirmed.toString()},
                          {"last_confirmed_timeline", loss.timeline},
                          {"last_confirmed_system_id", loss.systemId},
                          {"checkpoint_time", loss.time.empty() ? nlohmann::json() : nlohmann::json(loss.time)},
                          {"new_slot_at_or_after_lsn", server.xlogPos.toString()},
                          {"detected_at", utcIsoTime(unixMicrosNow())}};
  std::string text = value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  std::string error = fmt::format("replication slot \"{}\" was lost: events committed after {} (timeline {}) up to "
                                  "the new slot's start (at or after {}) were not relayed",
                                  config_.source.slot, loss.lastConfirmed.toString(), loss.timeline,
                                  server.xlogPos.toString());
  OutboxRecord record{config_.deadLetterTopic, key, text, {{"error", error}, {"outbox_gap", "slot_lost"}}};
  // A producer of its own (not transactional, idempotent): the gap is recorded before the slot exists again,
  // whichever delivery mode, and before any event of the new slot.
  std::optional<rd_kafka_resp_err_t> outcome;
  KafkaPublisher producer(config_.kafka, config_.limits,
                          [&](const KafkaPublisher::Delivery& delivery) { outcome = delivery.error; });
  std::string produceError;
  rd_kafka_resp_err_t code = RD_KAFKA_RESP_ERR_NO_ERROR;
  auto deadline = Clock::now() + kGapRecordBound;
  while (true) {
    auto status = producer.produce(record, 0, produceError, code);
    if (status == KafkaPublisher::ProduceStatus::Queued) break;
    if (status == KafkaPublisher::ProduceStatus::Failed || Clock::now() >= deadline) {
      throw ReplicationError("kafka: cannot write the slot-lost gap record to \"" + config_.deadLetterTopic +
                             "\": " + produceError + "; the slot is not re-created until it is written");
    }
    producer.poll();
  }
  while (!outcome && Clock::now() < deadline && !stopRequested()) {
    producer.poll();
    ::poll(nullptr, 0, 20);
  }
  if (!outcome || *outcome != RD_KAFKA_RESP_ERR_NO_ERROR) {
    throw ReplicationError("kafka: the slot-lost gap record to \"" + config_.deadLetterTopic + "\" was not " +
                           (outcome ? std::string("accepted: ") + rd_kafka_err2str(*outcome)
                                    : std::string("acknowledged within 30 s")) +
                           "; the slot is not re-created until it is written");
  }
  log::info("slot-lost gap record written to \"{}\" (key \"{}\")", config_.deadLetterTopic, key);
}

void Relay::ensureCheckpointTopic(bool required) {
  if (exactlyOnce() || checkpointTopicReady_) return;
  lastCheckpointTopicTry_ = Clock::now();
  try {
    ProgressStore store(config_.kafka, "");
    store.ensureTopic();
  } catch (const SetupError&) {
    throw;
  } catch (const std::runtime_error& e) {
    if (required) throw ReplicationError(e.what());
    // Streaming goes on (with Kafka unreachable nothing is confirmed anyway); tried again once a minute.
    log::warn("{}; no checkpoint is written until the progress topic is there", e.what());
    return;
  }
  checkpointTopicReady_ = true;
}

void Relay::maybeWriteCheckpoint() {
  if (exactlyOnce() || !knownServer_ || !publisher_) return;
  Lsn confirmed = inflight_.confirmedLsn();
  if (confirmed <= lastCheckpointLsn_) return;
  auto now = Clock::now();
  if (!checkpointTopicReady_) {
    // Bounded (the Admin API's request timeout), once a minute, only while Kafka was unreachable at connect.
    if (now - lastCheckpointTopicTry_ < std::chrono::minutes(1)) return;
    ensureCheckpointTopic(false);
    if (!checkpointTopicReady_) return;
  }
  if (!checkpointUrgent_ && now - lastCheckpointAt_ < milliseconds(config_.source.statusIntervalMs)) return;
  ProgressRecord checkpoint;
  checkpoint.slot = config_.source.slot;
  checkpoint.database = knownServer_->database;
  checkpoint.systemId = knownServer_->systemId;
  checkpoint.timeline = static_cast<uint32_t>(std::max(0, knownServer_->timeline));
  checkpoint.endLsn = confirmed;
  checkpoint.time = utcIsoTime(unixMicrosNow());
  std::string key = checkpointKey(knownServer_->database);
  std::string value = checkpoint.toJson();
  OutboxRecord record{config_.kafka.progressTopic, key, value, {}};
  std::string error;
  rd_kafka_resp_err_t code = RD_KAFKA_RESP_ERR_NO_ERROR;
  auto status = publisher_->produceToPartition(record, ProgressStore::kPartition, kProgressOpaque, error, code);
  if (status == KafkaPublisher::ProduceStatus::QueueFull) return;  // the next round tries again
  if (status == KafkaPublisher::ProduceStatus::Failed) {
    log::warn("kafka: cannot write the checkpoint to \"{}\": {}", config_.kafka.progressTopic, error);
  }
  lastCheckpointLsn_ = confirmed;
  lastCheckpointAt_ = now;
  checkpointUrgent_ = false;
}

std::string Relay::eosProgressOffHistory(const ServerIdentity& server, const std::string& history) const {
  if (!eos_.committed || eos_.committed->endLsn == Lsn()) return "";
  const ProgressRecord& committed = *eos_.committed;
  // The progress names positions in the WAL of the timeline it was written on. On a later timeline they hold up
  // to where that timeline ended; past it the new timeline has other transactions at the same positions.
  std::optional<Lsn> end;
  std::string where;
  if (committed.endLsn > server.xlogPos) {
    end = server.xlogPos;
    where = fmt::format("this server's WAL ends at {} (timeline {})", server.xlogPos.toString(), server.timeline);
  } else if (committed.timeline != 0 && committed.timeline != static_cast<uint32_t>(server.timeline)) {
    end = ReplicationStream::timelineEnd(history, committed.timeline);
    if (end && committed.endLsn <= *end) return "";
    where = end ? fmt::format("timeline {} ended at {} and this server went on from there on timeline {}",
                              committed.timeline, end->toString(), server.timeline)
                : fmt::format("this server's timeline {} does not descend from timeline {}", server.timeline,
                              committed.timeline);
  } else {
    return "";
  }
  return fmt::format(
      "exactly-once: Kafka's progress record for \"{}\" says the relay committed transactions up to {} on "
      "timeline {}, but {}: the server lost transactions whose events are in Kafka (a failover to a standby that "
      "had not received them; synchronized_standby_slots on the primary prevents it, README \"High "
      "availability\"). The relay does not guess which of this server's transactions Kafka lacks. To go on from "
      "the slot's position, delete the record (a tombstone: key \"{}\", null value, in topic \"{}\"); consumers "
      "may then see events of the lost transactions and of the new ones",
      eos_.transactionalId, committed.endLsn.toString(), committed.timeline, where, eos_.transactionalId,
      config_.kafka.progressTopic);
}

}  // namespace outbox
