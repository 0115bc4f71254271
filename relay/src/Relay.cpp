#include "src/Relay.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "common/Log.h"
#include "common/UnixTime.h"

namespace outbox {

namespace {
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using Ignored = RelayMetrics::IgnoredOperation;

// Each Kafka message carries one 64-bit opaque: the transaction's sequence in the low 48 bits and the index of
// its (table, topic) metric labels in the next 15. A record to the dead-letter topic standing for an event Kafka
// refused has the top bit set and the dead letter's id below it.
constexpr uint64_t kSequenceMask = (uint64_t{1} << 48) - 1;
constexpr uint64_t kDeadLetterFlag = uint64_t{1} << 63;
constexpr uint64_t kLabelsMask = 0x7fff;
uint64_t packOpaque(InflightTransactions::Sequence seq, uint16_t labels) {
  return (seq & kSequenceMask) | ((uint64_t{labels} & kLabelsMask) << 48);
}

// One lambda per alternative of a std::variant, for std::visit.
template <class... Handlers>
struct Overloaded : Handlers... {
  using Handlers::operator()...;
};
// Spelled out for clang 14, which does not yet deduce an aggregate's template arguments (P1816).
template <typename... Handlers>
Overloaded(Handlers...) -> Overloaded<Handlers...>;
}  // namespace

Relay::Relay(const RelayConfig& config, RelayMetrics& metrics)
    : config_(config),
      metrics_(metrics),
      router_(config),
      walProbe_(config.source),
      backoff_(config.source.reconnectBackoffMinMs, config.source.reconnectBackoffMaxMs) {
  if (pipe2(stopPipe_, O_NONBLOCK | O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
}

Relay::~Relay() {
  for (int fd : stopPipe_) {
    if (fd >= 0) ::close(fd);
  }
}

void Relay::requestStop() {
  char byte = 1;
  [[maybe_unused]] auto n = ::write(stopPipe_[1], &byte, 1);
}

bool Relay::stopRequested() {
  char buf[16];
  if (::read(stopPipe_[0], buf, sizeof buf) > 0 && !stopping_) {
    log::info("stop requested: finishing in-flight events (within {} ms)", config_.shutdownTimeoutMs);
    stopping_ = true;
    // One bound for the whole way out, from now: reading to the commit of an open transaction, Kafka's
    // acknowledgements and the last status update all share it.
    stopDeadline_ = Clock::now() + milliseconds(config_.shutdownTimeoutMs);
  }
  return stopping_;
}

void Relay::fail(int exitStatus, const std::string& why) {
  log::error("{}", why);
  if (!failedStatus_) failedStatus_ = exitStatus;
}

bool Relay::backpressured() const {
  return inflight_.inflightEvents() >= config_.limits.maxInflightEvents ||
         inflight_.inflightBytes() >= config_.limits.maxInflightBytes;
}

int Relay::run() {
  // Exactly-once: the transactional producer is created once the slot is taken (its transactional.id defaults to
  // one named after the database the server reports), so a hot standby never touches the transaction coordinator.
  if (!exactlyOnce()) {
    try {
      publisher_ = std::make_unique<KafkaPublisher>(config_.kafka, config_.limits,
                                                    [this](const KafkaPublisher::Delivery& d) { onDelivery(d); });
    } catch (const std::exception& e) {
      log::error("{}", e.what());
      return kExitSetup;
    }
    log::info("kafka producer: {}", publisher_->effectiveProperties());
  }
  for (const std::string& warning : unsafeOverrideWarnings(config_.kafka)) log::warn("{}", warning);

  backoff_.reset();
  while (!stopRequested() && !failedStatus_) {
    try {
      connectAndStream();
    } catch (const SlotBusyError& e) {
      // Exactly-once: another relay holds the slot and, once it initialised, our producer's epoch is stale. Taking
      // the slot again starts with a new producer and the progress as Kafka has it then.
      if (exactlyOnce()) eosDropProducer();
      metrics_.standby.Set(1);
      metrics_.streaming.Set(0);
      metrics_.postgresConnected.Set(0);  // the connection that found the slot busy is closed below
      log::info("replication slot \"{}\" is in use by another process ({}): standing by, retrying in {} ms",
                config_.source.slot, e.what(), config_.source.slotBusyRetryMs);
      if (stream_) stream_->close();
      waitServing(milliseconds(config_.source.slotBusyRetryMs));
    } catch (const SetupError& e) {
      fail(kExitSetup, e.what());
    } catch (const pgoutput::DecodeError& e) {
      fail(kExitProtocol, std::string("cannot decode the replication stream: ") + e.what());
    } catch (const ConnectRefusedError& e) {
      if (!connectedOnce_) {
        fail(kExitSetup, std::string(e.what()) + " (not retried at start-up: fix it, then start the relay again)");
        continue;
      }
      metrics_.streaming.Set(0);
      metrics_.postgresConnected.Set(0);
      metrics_.reconnects("postgres").Increment();
      milliseconds wait = backoff_.next();
      log::error("postgres: {}; retrying in {} ms", e.what(), wait.count());
      waitServing(wait);
    } catch (const TransactionReplay& e) {
      metrics_.streaming.Set(0);
      metrics_.postgresConnected.Set(0);
      if (stream_) stream_->close();
      // A record Kafka refused for its content is dead-lettered by the replay at once; anything else (a broker
      // outage, a timed-out transaction) waits the reconnect backoff first.
      milliseconds wait = eos_.abortForRejection ? milliseconds(0) : backoff_.next();
      eos_.abortForRejection = false;
      if (eos_.needReset) {
        // A fatal producer error that is not a fence by another relay: a new producer (created and initialised
        // when the slot is taken again) and the progress as Kafka has it then. Bounded: five in a row without a
        // commit stop the relay.
        eosDropProducer();
        eos_.needReset = false;
        if (++eos_.resetsWithoutCommit > 5) {
          fail(kExitDeliveryFailed, std::string("kafka: ") + e.what() +
                                        "; five new transactional producers in a row failed before committing: "
                                        "stopping (the log above says why)");
          continue;
        }
      }
      log::warn("exactly-once: {}; replaying from the last committed progress in {} ms", e.what(), wait.count());
      waitServing(wait);
    } catch (const ReplicationError& e) {
      metrics_.streaming.Set(0);
      metrics_.postgresConnected.Set(0);
      metrics_.reconnects("postgres").Increment();
      milliseconds wait = backoff_.next();
      log::warn("postgres: {}; reconnecting in {} ms", e.what(), wait.count());
      waitServing(wait);
    } catch (const std::exception& e) {
      // A bug or an impossible state: stop without confirming anything more, and say what happened.
      fail(kExitInternal, std::string("internal error: ") + e.what());
    }
  }
  shutdown();
  if (failedStatus_) return *failedStatus_;
  if (exactlyOnce()) return eos_.open ? kExitUnconfirmed : kExitOk;
  return inflight_.inflightEvents() == 0 ? kExitOk : kExitUnconfirmed;
}

void Relay::connectAndStream() {
  stream_ = std::make_unique<ReplicationStream>(config_.source);
  const ServerIdentity& server = stream_->connect();
  metrics_.postgresConnected.Set(1);
  connectedOnce_ = true;
  log::info("connected to PostgreSQL {} (system {}, database \"{}\", WAL at {})",
            ReplicationStream::versionString(server.serverVersion), server.systemId, server.database,
            server.xlogPos.toString());
  // pgoutput sends logical decoding messages from PostgreSQL 14 on; on 13 they would be dropped without a trace.
  if (config_.messages.enabled && !ReplicationStream::sendsLogicalMessages(server.serverVersion)) {
    throw SetupError("[messages] enabled = true, but PostgreSQL " +
                     ReplicationStream::versionString(server.serverVersion) +
                     " cannot send logical decoding messages (pgoutput sends them from PostgreSQL 14 on): set "
                     "messages.enabled = false (outbox tables work on 13), or upgrade PostgreSQL to 14 or later");
  }
  metrics_.sourceInfo(stream_->protocolVersion(), ReplicationStream::versionString(server.serverVersion));
  std::vector<const OutboxTableConfig*> tables;
  for (const auto& table : config_.outboxes) tables.push_back(&table);
  // OIDs name tables only within one cluster (a physical standby shares them): another system starts afresh.
  if (server.systemId != outboxOidsSystem_) outboxOids_.clear();
  auto resolved = stream_->resolveOutboxTables(tables, outboxOids_);
  std::vector<uint32_t> oids;
  for (const auto& table : resolved) {
    oids.push_back(table.oid);
    if (table.renamed()) {
      log::warn(
          "outbox table {}.{} is now {}.{} (renamed while this relay streamed it): still relaying it with its "
          "[[outbox]] mapping; change [[outbox]] table to the new name before the next start",
          table.config->schema, table.config->table, table.schema, table.table);
    }
  }
  outboxOids_ = oids;
  outboxOidsSystem_ = server.systemId;
  stream_->ensurePublication(resolved);
  bool recreated = false;
  std::optional<Lsn> slotPosition = prepareSlot(server, recreated);
  if (!slotPosition) return;  // a stop came first
  Lsn slotConfirmed = *slotPosition;
  // A slot just created needed Kafka (the checkpoint was read) anyway.
  ensureCheckpointTopic(slotConfirmed == Lsn() || recreated);
  router_.reset();
  router_.setOutboxOids(std::move(oids));
  decoder_.reset();
  // What the relay knows of the stream is true only of the history it was read from. Another system, another
  // timeline (a promoted standby: its WAL after the promotion point is not what the old primary wrote), a
  // position past this server's WAL end, or a slot just re-created: the slot's position is the only one that
  // means something here. Resuming there may publish again what Kafka has; resuming past it would skip commits.
  std::string restartWhy;
  Lsn known = confirmedLsn();
  if (recreated) {
    restartWhy = "the slot was re-created";
  } else if (knownServer_ && knownServer_->systemId != server.systemId) {
    restartWhy = fmt::format("the server is another system ({}, was {})", server.systemId, knownServer_->systemId);
  } else if (knownServer_ && knownServer_->timeline != server.timeline) {
    restartWhy = fmt::format("the server is on timeline {} (was {}: a promotion)", server.timeline,
                             knownServer_->timeline);
  } else if (known > server.xlogPos) {
    restartWhy = fmt::format("the relay's position {} is past this server's WAL end {}", known.toString(),
                             server.xlogPos.toString());
  }
  if (!restartWhy.empty()) {
    log::warn("postgres: {}: resuming from the slot's position {} (the relay had {}); events after it that Kafka "
              "already has are published again",
              restartWhy, slotConfirmed.toString(), known.toString());
    checkpointUrgent_ = true;
  }
  if (exactlyOnce()) {
    // Whatever the lost connection (or an aborted Kafka transaction) left open is aborted: the replay starts
    // from the committed progress, which names exactly what Kafka has. (A producer with a fatal error is not
    // asked to abort: a new one's init_transactions aborts it.)
    if (eos_.needReset) {
      // Decided as at the top of the stream loop: fenced by a relay that holds the slot now exits 6; anything
      // else gets a new producer. (Dropping it unasked made a fenced zombie stand by instead of stopping.)
      eosHandleFatal();
      if (failedStatus_) return;
      eosDropProducer();
      eos_.needReset = false;
    }
    if (eos_.open) eosAbort("the PostgreSQL connection was lost");
    inflight_.clear();
    resume_.reconnected();
    if (!restartWhy.empty() || slotConfirmed > eos_.confirmed) eos_.confirmed = slotConfirmed;
    Lsn start = slotConfirmed;
    if (eos_.ready && eos_.committed && eos_.committed->endLsn > start) start = eos_.committed->endLsn;
    // Read before streaming (the connection is in copy mode after): checked once the progress is known.
    std::string history = stream_->timelineHistory(server.timeline);
    if (eos_.ready) {
      if (std::string off = eosProgressOffHistory(server, history); !off.empty()) {
        fail(kExitSetup, off);
        return;
      }
    }
    // START_REPLICATION takes the slot (SlotBusyError while another relay holds it: stand by) before the
    // transactional producer exists: initialising it would fence the relay that holds the slot.
    stream_->start(start);
    streamedFromSlot_ = true;
    knownServer_ = server;
    if (!eosPrepare(server)) return;  // a stop came first
    if (std::string off = eosProgressOffHistory(server, history); !off.empty()) {
      fail(kExitSetup, off);
      return;
    }
  } else {
    if (restartWhy.empty()) {
      inflight_.resetConfirmed(slotConfirmed);
    } else {
      // Kafka may still acknowledge records of the old stream: they count against the in-flight budget until
      // then, but confirm nothing.
      inflight_.restartFrom(slotConfirmed);
    }
    // What a lost connection left behind: the open transaction is re-sent from its start; the events of it
    // already with Kafka are skipped by count. Transactions received whole are not asked for again.
    resume_.reconnected();
    stream_->start(inflight_.resumeLsn());
    streamedFromSlot_ = true;
    knownServer_ = server;
  }
  checkpointUrgent_ = true;
  metrics_.standby.Set(0);
  metrics_.streaming.Set(1);
  backoff_.reset();
  lastStatusAt_ = Clock::now();
  lastSentStatus_ = Lsn();
  streamLoop();
}

void Relay::streamLoop() {
  const auto interval = milliseconds(config_.source.statusIntervalMs);
  // A confirmation that advanced goes out within this time, so the slot follows Kafka closely under load: what
  // Kafka acknowledged but the slot has not heard of yet is what a crash publishes twice. (34 bytes each.)
  const auto advanceInterval = std::min(interval, milliseconds(100));
  while (true) {
    pollKafka();
    retryPendingDeadLetters();
    if (failedStatus_) return;
    if (exactlyOnce() && eos_.needReset) {
      eosHandleFatal();
      if (failedStatus_) return;
      throw TransactionReplay(eos_.abortReason);
    }
    if (exactlyOnce() && eos_.needAbort) {
      std::string why = eos_.abortReason;
      eosAbort(why);
      if (failedStatus_) return;
      throw TransactionReplay(why);
    }
    if (exactlyOnce() && stopRequested()) {
      // What is in the open Kafka transaction commits with a progress record naming it exactly (a PostgreSQL
      // transaction cut short included), so there is nothing to read to first.
      if (eos_.open) eosCommit();
      return;
    }
    if (stopRequested()) {
      // Finish the transaction being received first (within the shutdown bound): its events already in Kafka
      // would otherwise be published again by the next start, since only a whole transaction is confirmed.
      if (!resume_.inTransaction()) return;
      if (!readingToCommit_) {
        readingToCommit_ = true;
        log::info("stop requested mid-transaction: reading to its commit first");
      }
      if (Clock::now() >= stopDeadline_) return;
    }

    int read = 0;
    bool idle = false;
    while (!backpressured() && read < 4096 && !failedStatus_ &&
           !(exactlyOnce() && (eos_.needAbort || eosShouldCommit(false)))) {
      std::string_view data;
      if (stream_->read(data) == ReplicationStream::ReadStatus::WouldBlock) {
        idle = true;
        break;
      }
      handleCopyData(data);
      ++read;
      if ((read & 255) == 0) pollKafka();  // keep delivery reports flowing during a burst
    }
    if (exactlyOnce() && eosShouldCommit(idle || backpressured())) {
      if (!eosCommit()) continue;  // an abort, a failure or a stop: handled at the top of the loop
    }

    auto now = Clock::now();
    Lsn confirmed = confirmedLsn();
    if (replyRequested_ || now - lastStatusAt_ >= interval ||
        (confirmed > lastSentStatus_ && now - lastStatusAt_ >= advanceInterval)) {
      sendStatus();
      now = Clock::now();
    }
    maybeWriteCheckpoint();
    refreshGauges();
    if (read >= 4096) continue;  // more is waiting: read it before sleeping

    auto nextStatusAt = lastStatusAt_ + (confirmedLsn() > lastSentStatus_ ? advanceInterval : interval);
    auto untilStatus = std::chrono::duration_cast<milliseconds>(nextStatusAt - now);
    int timeout = static_cast<int>(std::clamp<int64_t>(untilStatus.count(), 0, 1000));
    if (exactlyOnce() && eos_.open) {
      // Wake up for the transaction's time bound.
      auto untilBound = std::chrono::duration_cast<milliseconds>(
          eos_.openedAt + milliseconds(config_.kafka.transactionMaxMs) - now);
      timeout = static_cast<int>(std::clamp<int64_t>(untilBound.count(), 0, timeout));
    }
    if (stopping_) {
      auto untilStop = std::chrono::duration_cast<milliseconds>(stopDeadline_ - now).count();
      timeout = static_cast<int>(std::clamp<int64_t>(untilStop, 0, timeout));
    }
    // Kafka's wake-up pipe, the stop pipe, the lag probe's socket while it waits, PostgreSQL's socket: for
    // reading unless backpressured, for writing while a status update is not all sent.
    pollfd fds[4] = {{publisher_->wakeupFd(), POLLIN, 0},
                     {stopPipe_[0], POLLIN, 0},
                     {walProbe_.socket(), walProbe_.events(), 0},
                     {stream_->socket(), 0, 0}};
    if (!backpressured()) fds[3].events |= POLLIN;
    if (stream_->flushPending()) fds[3].events |= POLLOUT;
    int nfds = fds[3].events != 0 ? 4 : 3;
    if (::poll(fds, nfds, timeout) < 0 && errno != EINTR) throw ReplicationError("poll failed");
    stream_->flush();
  }
}

Lsn Relay::confirmedLsn() const { return exactlyOnce() ? eos_.confirmed : inflight_.confirmedLsn(); }

int Relay::fatalExitStatus() const {
  return publisher_ && publisher_->fenced() ? kExitFenced : kExitDeliveryFailed;
}

void Relay::pollKafka() {
  if (!publisher_) return;
  publisher_->poll();
  if (exactlyOnce()) {
    if (publisher_->fatalError() && !failedStatus_) eosFatal("kafka: " + *publisher_->fatalError());
    return;
  }
  if (publisher_->fatalError() && !failedStatus_) {
    fail(fatalExitStatus(),
         publisher_->fenced()
             ? "kafka: fenced: another relay with transactional.id \"" + eos_.transactionalId +
                   "\" took over (" + *publisher_->fatalError() +
                   "); stopping without confirming anything it did not commit"
             : "kafka: " + *publisher_->fatalError());
  }
}

void Relay::keepAlive() {
  if (!stream_ || !stream_->isStreaming()) return;
  auto now = Clock::now();
  if (replyRequested_ || now - lastStatusAt_ >= milliseconds(config_.source.statusIntervalMs)) {
    try {
      sendStatus();
    } catch (const ReplicationError& e) {
      lastStatusAt_ = now;
      log::warn("postgres: could not send a status update: {}", e.what());
    }
  }
  try {
    stream_->flush();
  } catch (const ReplicationError&) {
  }
}

void Relay::sendStatus() {
  Lsn confirmed = confirmedLsn();
  stream_->sendStatus(confirmed);
  lastSentStatus_ = confirmed;
  lastStatusAt_ = Clock::now();
  replyRequested_ = false;
  metrics_.confirmedFlushLsn.Set(static_cast<double>(confirmed.value()));
}

void Relay::refreshGauges() {
  metrics_.inflightEvents.Set(static_cast<double>(inflight_.inflightEvents()));
  metrics_.inflightBytes.Set(static_cast<double>(inflight_.inflightBytes()));
  metrics_.inflightTransactions.Set(static_cast<double>(inflight_.transactions()));
  if (!publisher_) {
    metrics_.lastLoopTimestamp.Set(unixSecondsNow());
    probeLag();
    return;
  }
  metrics_.kafkaQueueMessages.Set(publisher_->queueLength());
  metrics_.kafkaConnected.Set(publisher_->brokersReachable() ? 1 : 0);
  if (publisher_->reconnects() > kafkaReconnectsSeen_) {
    metrics_.reconnects("kafka").Increment(static_cast<double>(publisher_->reconnects() - kafkaReconnectsSeen_));
    kafkaReconnectsSeen_ = publisher_->reconnects();
  }
  metrics_.lastLoopTimestamp.Set(unixSecondsNow());
  probeLag();
  // Source lag: how long the oldest committed event still in flight has waited (0 when nothing waits).
  if (auto oldest = inflight_.oldestPendingCommitTime()) {
    metrics_.sourceLagSeconds.Set(std::max(0.0, unixSecondsNow() - static_cast<double>(oldest->unixMicros()) / 1e6));
  } else {
    metrics_.sourceLagSeconds.Set(0);
  }
}

void Relay::probeLag() {
  // Asynchronous: started here, moved on each round (and when its socket wakes the loop), never waited for.
  auto now = Clock::now();
  if (!walProbe_.busy() && now - lastLagProbe_ >= milliseconds(config_.source.lagPollIntervalMs)) {
    lastLagProbe_ = now;
    walProbe_.start();
  }
  if (auto answer = walProbe_.advance()) {
    metrics_.serverWalLsn.Set(static_cast<double>(answer->serverWal.value()));
    metrics_.replicationLagBytes.Set(static_cast<double>(answer->serverWal.bytesSince(confirmedLsn())));
    metrics_.slotHealth(answer->slot);
  }
}

void Relay::handleCopyData(std::string_view data) {
  auto message = pgoutput::PgOutputDecoder::decodeReplication(data);
  if (auto* keepalive = std::get_if<pgoutput::PrimaryKeepalive>(&message)) {
    if (exactlyOnce()) {
      // Nothing of the stream up to here waits for a Kafka commit: no Kafka transaction is open and none of the
      // PostgreSQL transaction being received is published.
      if (!resume_.inTransaction() && !eos_.open && keepalive->walEnd > eos_.confirmed) {
        eos_.confirmed = keepalive->walEnd;
      }
    } else if (!resume_.inTransaction()) {
      inflight_.serverWalEnd(keepalive->walEnd);
    }
    // The server asks for a reply when wal_sender_timeout is half gone: answer at once.
    if (keepalive->replyRequested) replyRequested_ = true;
    return;
  }
  handleMessage(decoder_.decode(std::get<pgoutput::XLogData>(message).data));
}

void Relay::handleMessage(const pgoutput::PgOutputMessage& message) {
  std::visit(
      Overloaded{
          [this](const pgoutput::Begin& m) { onBegin(m); },
          [this](const pgoutput::Commit& m) { onCommit(m); },
          [this](const pgoutput::Relation& m) { onRelation(m); },
          [this](const pgoutput::Insert& m) { onInsert(m); },
          [this](const pgoutput::Message& m) { onMessage(m); },
          [this](const pgoutput::Update& m) { onIgnored(m.relationId, Ignored::Update); },
          [this](const pgoutput::Delete& m) { onIgnored(m.relationId, Ignored::Delete); },
          [this](const pgoutput::Truncate& m) {
            for (RelationId id : m.relationIds) onIgnored(id, Ignored::Truncate);
          },
          // Origins and type descriptions do not change what is published.
          [](const pgoutput::Origin&) {},
          [](const pgoutput::Type&) {},
          [](const auto&) {
            // Streaming and two-phase messages are only sent when those options are on; the relay does not
            // ask for them.
            throw pgoutput::DecodeError("unexpected pgoutput message for a stream without streaming or two_phase");
          },
      },
      message);
  logIgnoredChanges();
}

void Relay::onBegin(const pgoutput::Begin& begin) {
  auto began = resume_.begin(begin);
  // Unix epoch ms; a commit time before 1970 (only a broken server sends one) leaves it to librdkafka.
  router_.beginTransaction(std::max<int64_t>(0, begin.commitTime.unixMicros() / 1000));
  if (exactlyOnce()) eosBeginUnit(begin.finalLsn);
  if (began.resumed) {
    log::info(
        "the transaction committing at {} is sent again after the reconnect: skipping its first {} outbox "
        "events, already with Kafka",
        begin.finalLsn.toString(), began.alreadyPublished);
  }
  if (began.abandoned) {
    log::warn("expected transaction committing at {} to be re-sent first, got {}; its events may be duplicated",
              began.abandoned->toString(), begin.finalLsn.toString());
  }
}

void Relay::onCommit(const pgoutput::Commit& commit) {
  resume_.commit(commit);
  if (exactlyOnce()) eosEndUnit(commit.endLsn);
  metrics_.transactions.Increment();
}

void Relay::onInsert(const pgoutput::Insert& insert) {
  auto txn = resume_.current("pgoutput Insert outside a transaction");
  std::string error;
  auto outcome = router_.routeInsert(insert, record_, error);
  if (outcome == OutboxRouter::Outcome::NotOutbox) return;
  if (exactlyOnce() ? eosSkipEvent() : resume_.skipAlreadyPublished()) return;
  if (router_.traceContextDropped()) {
    metrics_.traceContextsDropped.Increment();
    auto now = Clock::now();
    if (now - lastTraceDropLog_ >= std::chrono::seconds(10)) {
      lastTraceDropLog_ = now;
      log::warn("{}: a row's tracing_column holds no valid W3C trace context (traceparent 00-<32 hex>-<16 hex>-<2 "
                "hex>, tracestate up to 512 printable characters): published without it (counted in "
                "outbox_relay_trace_contexts_dropped_total, logged at most every 10 s)",
                router_.outboxName(insert.relationId));
    }
  }
  publishRouted(txn, router_.outboxName(insert.relationId), outcome, error);
}

void Relay::onMessage(const pgoutput::Message& message) {
  if (message.prefix != config_.messages.prefix) return;  // another application's message
  if (!config_.messages.enabled) {
    ignoreMessage(metrics_.messagesIgnoredDisabled, message,
                  "[messages] is disabled (set messages.enabled = true to publish them; README \"Security\")");
    return;
  }
  if (!message.transactional && config_.messages.nonTransactional == MessagesConfig::NonTransactional::Ignore) {
    // Decoded when written, not at a commit: it would be published even if its writer rolled back, and ahead of
    // the rows of the transaction that wrote it.
    ignoreMessage(metrics_.messagesIgnoredNonTransactional, message,
                  "it is non-transactional (pg_logical_emit_message(false, ...)); set messages.non_transactional = "
                  "\"publish\" to publish such messages at once, whatever becomes of their transaction");
    return;
  }
  std::string error;
  auto outcome = router_.routeMessage(message, record_, error);
  if (outcome == OutboxRouter::Outcome::NotOutbox) return;
  if (message.transactional) {
    auto txn = resume_.current("pgoutput transactional Message outside a transaction");
    if (exactlyOnce() ? eosSkipEvent() : resume_.skipAlreadyPublished()) return;
    publishRouted(txn, RelayMetrics::kMessageTable, outcome, error);
    return;
  }
  // Emitted outside any transaction's fate: a unit of its own, confirmable at its end position.
  auto seq = resume_.beginStandalone(message.lsn);
  if (exactlyOnce()) {
    // A unit of its own in the progress, named by its LSN.
    eosBeginUnit(message.lsn);
    if (!eosSkipEvent()) publishRouted(seq, RelayMetrics::kMessageTable, outcome, error);
    eosEndUnit(message.lsn);
  } else {
    publishRouted(seq, RelayMetrics::kMessageTable, outcome, error);
  }
  resume_.endStandalone(seq, message.lsn);
}

void Relay::onRelation(const pgoutput::Relation& relation) {
  if (const OutboxTableConfig* renamed = router_.onRelation(relation)) {
    // The publication follows the table by OID, so its rows keep coming under the new name: still an outbox.
    metrics_.outboxRenamed.Increment();
    log::warn(
        "outbox table {}.{} arrives as {}.{} (renamed): still relaying its rows with its [[outbox]] mapping; "
        "change [[outbox]] table to the new name before the next start, which otherwise stops with a setup "
        "error",
        renamed->schema, renamed->table, relation.nspname, relation.relname);
  }
}

void Relay::ignoreMessage(prometheus::Counter& counter, const pgoutput::Message& message, const char* why) {
  counter.Increment();
  ++messagesIgnoredSinceLog_;
  // The first one at once, then at most one line per 10 s: whoever emits them may emit many.
  auto now = Clock::now();
  if (lastMessageIgnoredLog_ != Clock::time_point{} && now - lastMessageIgnoredLog_ <= std::chrono::seconds(10)) return;
  log::warn("ignored {} logical message(s) with prefix \"{}\" (the latest at {}): {}", messagesIgnoredSinceLog_,
            config_.messages.prefix, message.lsn.toString(), why);
  messagesIgnoredSinceLog_ = 0;
  lastMessageIgnoredLog_ = now;
}

void Relay::publishRouted(InflightTransactions::Sequence txn, std::string_view table, OutboxRouter::Outcome outcome,
                          const std::string& error) {
  if (outcome == OutboxRouter::Outcome::DeadLettered) {
    metrics_.deadLettered(table).Increment();
    bool message = table == RelayMetrics::kMessageTable;
    log::warn("dead-lettering {}: {}", message ? "a logical message" : "an outbox row", error);
  }
  publish(record_, txn, metrics_.eventLabels(table, record_.topic));
}

void Relay::onIgnored(RelationId relation, RelayMetrics::IgnoredOperation operation) {
  std::string_view table = router_.outboxName(relation);
  if (table.empty()) return;
  metrics_.ignored(table, operation).Increment();
  ++ignoredSinceLog_;
}

void Relay::logIgnoredChanges() {
  if (ignoredSinceLog_ == 0 || Clock::now() - lastIgnoredLog_ <= std::chrono::seconds(10)) return;
  log::info("ignored {} UPDATE/DELETE/TRUNCATE changes on outbox tables (only inserts are published)",
            ignoredSinceLog_);
  ignoredSinceLog_ = 0;
  lastIgnoredLog_ = Clock::now();
}

void Relay::publish(const OutboxRecord& record, InflightTransactions::Sequence txn, uint16_t labels) {
  std::string error;
  rd_kafka_resp_err_t code = RD_KAFKA_RESP_ERR_NO_ERROR;
  // Exactly-once: a record's opaque is its counter in the Kafka transaction (eos_.produced), not its transaction.
  uint64_t opaqueId = txn;
  if (exactlyOnce()) {
    auto rejected = eosRejected();
    if (rejected && rejected->confirmed) {
      // Refused alone for its content in a transaction that was aborted for it: its dead letter takes its place.
      if (!eosEnsureOpen()) return;
      deadLetterRejected(txn, record.bytes(), rejected->error, record, false);
      eos_.tracker.eventIncluded();  // its dead letter is in the transaction (or waits to be: before any commit)
      return;
    }
    if (rejected) {
      // A suspect: what comes before it commits first, then it goes alone in a Kafka transaction of its own (one
      // record, one batch), committed at once below.
      if (eos_.open && !eosCommit()) return;  // an abort, a failure or a stop: the loop handles it
      if (!eosEnsureOpen()) return;
      eos_.isolating = true;
    } else if (!eosEnsureOpen()) {
      return;
    }
    opaqueId = eos_.nextCounter;
  }
  while (true) {
    switch (publisher_->produce(record, packOpaque(opaqueId, labels), error, code)) {
      case KafkaPublisher::ProduceStatus::Queued:
        inflight_.addEvent(txn, record.bytes());
        if (exactlyOnce()) {
          eosProduced(txn, record.bytes(), labels);
          if (eos_.isolating) eosCommit();  // failing, it sets needAbort (the loop aborts and replays)
        }
        return;
      case KafkaPublisher::ProduceStatus::QueueFull:
        metrics_.publishErrors("queue_full").Increment();
        if (!serveWhileQueueFull(txn, record)) return;
        break;
      case KafkaPublisher::ProduceStatus::Failed:
        if (KafkaPublisher::contentRejection(code) && record.topic != config_.deadLetterTopic) {
          deadLetterRejected(txn, record.bytes(), code, record, false);
          if (exactlyOnce()) eos_.tracker.eventIncluded();
          return;
        }
        if (exactlyOnce() && (code == RD_KAFKA_RESP_ERR__FATAL || publisher_->fatalError())) {
          eosFatal("kafka: " + (publisher_->fatalError() ? *publisher_->fatalError() : error));
          return;
        }
        if (exactlyOnce() && code == RD_KAFKA_RESP_ERR__STATE) {
          // A failed delivery made the Kafka transaction abortable: librdkafka takes no more records until the
          // abort, and the replay publishes this one.
          eosNeedAbort("the Kafka transaction became abortable: " + error);
          return;
        }
        metrics_.publishErrors("produce_failed").Increment();
        // In flight and never acknowledged: its transaction (also a logical message outside one) stays unconfirmed.
        inflight_.addEvent(txn, record.bytes());
        fail(kExitDeliveryFailed, "kafka: " + error + "; stopping without confirming this event");
        return;
    }
  }
}

bool Relay::serveWhileQueueFull(InflightTransactions::Sequence txn, const OutboxRecord& record) {
  // librdkafka's queue is sized above the in-flight budget, so this is rare: serve reports, then retry. A round
  // waits at most 10 ms; status updates keep going (wal_sender_timeout) and a stop is honoured within
  // shutdown_timeout_ms.
  auto giveUp = [&](int status, const std::string& why) {
    inflight_.addEvent(txn, record.bytes());  // never acknowledged: the transaction is not confirmed
    fail(status, why);
    return false;
  };
  pollfd fds[2] = {{publisher_->wakeupFd(), POLLIN, 0}, {stopPipe_[0], POLLIN, 0}};
  ::poll(fds, 2, 10);
  publisher_->poll();
  if (publisher_->fatalError()) return giveUp(fatalExitStatus(), "kafka: " + *publisher_->fatalError());
  retryPendingDeadLetters();
  if (failedStatus_) return giveUp(*failedStatus_, "stopping without confirming the event being published");
  auto now = Clock::now();
  if (stopRequested()) {
    if (stopDeadline_ == Clock::time_point{}) {
      stopDeadline_ = now + milliseconds(config_.shutdownTimeoutMs);
      log::info("stop requested while librdkafka's queue is full: still handing over the event being published");
    }
    if (now >= stopDeadline_) {
      return giveUp(kExitUnconfirmed,
                    "stop requested and librdkafka's queue stayed full for shutdown_timeout_ms: stopping without "
                    "confirming the transaction being published (it is sent again on the next start)");
    }
  }
  if (replyRequested_ || now - lastStatusAt_ >= milliseconds(config_.source.statusIntervalMs)) {
    try {
      sendStatus();
    } catch (const ReplicationError& e) {
      lastStatusAt_ = Clock::now();  // the read loop notices the broken connection once this event is handed over
      log::warn("postgres: could not send a status update while Kafka's queue is full: {}", e.what());
    }
  }
  refreshGauges();
  return true;
}

OutboxRecord Relay::OwnedRecord::view() const {
  OutboxRecord record;
  record.topic = topic;
  if (key) record.key = *key;
  if (value) record.value = *value;
  for (const auto& [name, text] : headers) record.headers.emplace_back(name, text);
  return record;
}

void Relay::deadLetterRejected(InflightTransactions::Sequence txn, uint64_t originalBytes, rd_kafka_resp_err_t error,
                               const OutboxRecord& original, bool counted) {
  auto rejection = *KafkaPublisher::contentRejection(error);
  bool tooLarge = rejection == KafkaPublisher::Rejection::TooLarge;
  if (!counted) inflight_.addEvent(txn, originalBytes);
  std::string why = std::string("Kafka refused the record for topic \"") + std::string(original.topic) +
                    "\": " + rd_kafka_err2str(error) + " (" + rd_kafka_err2name(error) + ")";
  std::string_view id;
  for (const auto& [name, text] : original.headers) {
    if (name == "id") id = text;
  }
  if (original.topic == config_.deadLetterTopic) {
    // A record the router already sent to the dead-letter topic: there is nowhere else to put it.
    metrics_.publishErrors(rd_kafka_err2name(error)).Increment();
    fail(kExitDeliveryFailed, "kafka: the dead-letter topic refused a record (event id \"" + std::string(id) +
                                  "\"): " + why + "; stopping without confirming it");
    return;
  }
  log::warn("dead-lettering the event with id \"{}\": {}; sending it to \"{}\"{}", id, why, config_.deadLetterTopic,
            tooLarge ? " without its payload" : "");

  OwnedRecord letter;
  letter.topic = config_.deadLetterTopic;
  if (original.key) letter.key = std::string(*original.key);
  if (original.value && !tooLarge) letter.value = std::string(*original.value);
  for (const auto& [name, text] : original.headers) letter.headers.emplace_back(name, text);
  letter.headers.emplace_back("original_topic", original.topic);
  if (original.key) letter.headers.emplace_back("original_key", *original.key);
  letter.headers.emplace_back("original_size", std::to_string(original.bytes()));
  letter.headers.emplace_back("error", why);

  uint64_t letterId = nextDeadLetter_++;
  deadLetters_.emplace(letterId, DeadLetter{txn, originalBytes, rejection, std::string(original.topic)});
  produceDeadLetter(letterId, std::move(letter));
}

void Relay::produceDeadLetter(uint64_t id, OwnedRecord record) {
  bool queueFull = false;
  if (pendingDeadLetters_.empty() && tryProduceDeadLetter(id, record, queueFull)) return;
  if (pendingDeadLetters_.empty() && !queueFull) return;  // failed: the relay stops
  pendingDeadLetters_.emplace_back(id, std::move(record));
}

bool Relay::tryProduceDeadLetter(uint64_t id, OwnedRecord& record, bool& queueFull) {
  std::string error;
  rd_kafka_resp_err_t code = RD_KAFKA_RESP_ERR_NO_ERROR;
  while (true) {
    switch (publisher_->produce(record.view(), kDeadLetterFlag | id, error, code)) {
      case KafkaPublisher::ProduceStatus::Queued:
        if (exactlyOnce()) {
          // In the same Kafka transaction as the events around it; it counts towards the transaction's bounds.
          ++eos_.events;
          eos_.bytes += record.view().bytes();
        }
        return true;
      case KafkaPublisher::ProduceStatus::QueueFull:
        queueFull = true;
        return false;
      case KafkaPublisher::ProduceStatus::Failed:
        if (code == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE && record.value) {
          // The payload did not fit the dead-letter record either: the headers still tell what happened.
          record.value.reset();
          record.headers.emplace_back("payload_dropped", "too large for the dead-letter topic");
          continue;
        }
        metrics_.publishErrors("produce_failed").Increment();
        deadLetters_.erase(id);  // its event stays in flight, never acknowledged: not confirmed
        fail(kExitDeliveryFailed,
             "kafka: cannot dead-letter a refused record: " + error + "; stopping without confirming it");
        return false;
    }
  }
}

void Relay::retryPendingDeadLetters() {
  while (!pendingDeadLetters_.empty() && !failedStatus_) {
    auto& [id, record] = pendingDeadLetters_.front();
    bool queueFull = false;
    if (!tryProduceDeadLetter(id, record, queueFull) && queueFull) return;
    pendingDeadLetters_.pop_front();
  }
}

void Relay::onDeadLetterDelivery(const KafkaPublisher::Delivery& delivery) {
  auto it = deadLetters_.find(delivery.opaque & ~kDeadLetterFlag);
  if (it == deadLetters_.end()) return;
  DeadLetter letter = std::move(it->second);
  deadLetters_.erase(it);
  if (delivery.error != RD_KAFKA_RESP_ERR_NO_ERROR) {
    metrics_.publishErrors(rd_kafka_err2name(delivery.error)).Increment();
    if (exactlyOnce() && !KafkaPublisher::contentRejection(delivery.error)) {
      // Exactly-once: the dead letter is a record of the Kafka transaction like the events around it. A
      // transaction error (an abort purged it, an epoch bump after skipped sequence numbers) aborts that
      // transaction, and the replay puts the dead letter in the same place again. Only the dead-letter topic
      // refusing the record itself stops the relay.
      eosNeedAbort(std::string("the dead letter to \"") + std::string(delivery.topic) +
                   "\" failed: " + rd_kafka_err2str(delivery.error));
      return;
    }
    fail(kExitDeliveryFailed, std::string("kafka: the dead-letter topic \"") + std::string(delivery.topic) +
                                  "\" refused the record standing for an event Kafka refused for topic \"" +
                                  letter.originalTopic + "\": " + rd_kafka_err2str(delivery.error) +
                                  "; stopping without confirming it (it is re-sent after a restart)");
    return;
  }
  metrics_.rejected(KafkaPublisher::rejectionName(letter.rejection)).Increment();
  inflight_.acknowledge(letter.txn, letter.originalBytes);
}

void Relay::onDelivery(const KafkaPublisher::Delivery& delivery) {
  if (delivery.opaque == kProgressOpaque) {
    if (delivery.error == RD_KAFKA_RESP_ERR_NO_ERROR) return;
    if (exactlyOnce()) {
      eosNeedAbort(std::string("the progress record was refused: ") + rd_kafka_err2str(delivery.error));
    } else {
      // The next one (within a status interval) supersedes it; until then a lost slot is told by this process.
      log::warn("kafka: the checkpoint to \"{}\" was refused: {}", config_.kafka.progressTopic,
                rd_kafka_err2str(delivery.error));
      checkpointUrgent_ = true;
      lastCheckpointLsn_ = Lsn();
    }
    return;
  }
  if (delivery.opaque & kDeadLetterFlag) {
    onDeadLetterDelivery(delivery);
    retryPendingDeadLetters();  // a delivery made room (also while shutdown() drains)
    return;
  }
  if (exactlyOnce()) {
    eosOnDelivery(delivery);
    return;
  }
  auto seq = delivery.opaque & kSequenceMask;
  if (delivery.error != RD_KAFKA_RESP_ERR_NO_ERROR) {
    if (KafkaPublisher::contentRejection(delivery.error)) {
      // The record's own fault (too large for the topic, a topic that does not exist, ...): a dead letter takes
      // its place. librdkafka goes on with the records after it, in order.
      OutboxRecord original{delivery.topic, delivery.key, delivery.value, delivery.headers};
      deadLetterRejected(seq, delivery.bytes, delivery.error, original, true);
      return;
    }
    // Permanent: with an idempotent producer and no message timeout, librdkafka retries everything transient.
    // The event is not acknowledged, so its transaction and everything after it stay unconfirmed in the slot.
    metrics_.publishErrors(rd_kafka_err2name(delivery.error)).Increment();
    fail(kExitDeliveryFailed, std::string("kafka: an event to topic \"") + std::string(delivery.topic) +
                                  "\" failed permanently: " + rd_kafka_err2str(delivery.error) +
                                  "; stopping without confirming it (it is re-sent after a restart)");
    return;
  }
  const auto& labels = metrics_.labels(static_cast<uint16_t>((delivery.opaque >> 48) & kLabelsMask));
  labels.published->Increment();
  labels.bytes->Increment(static_cast<double>(delivery.bytes));
  if (auto commitTime = inflight_.acknowledge(seq, delivery.bytes)) {
    double latency = unixSecondsNow() - static_cast<double>(commitTime->unixMicros()) / 1e6;
    metrics_.commitToAckSeconds.Observe(std::max(0.0, latency));
  }
}

void Relay::waitServing(milliseconds duration) {
  auto deadline = Clock::now() + duration;
  while (!stopRequested() && !failedStatus_) {
    auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return;
    // Before the exactly-once producer exists (a standby), only the stop pipe and the lag probe.
    pollfd fds[3] = {
        {stopPipe_[0], POLLIN, 0}, {walProbe_.socket(), walProbe_.events(), 0}, {-1, POLLIN, 0}};
    if (publisher_) fds[2].fd = publisher_->wakeupFd();
    ::poll(fds, publisher_ ? 3 : 2, static_cast<int>(std::min<int64_t>(left.count(), 1000)));
    pollKafka();
    retryPendingDeadLetters();
    refreshGauges();
  }
}

void Relay::shutdown() {
  // Stop reading; give Kafka what is left of the stop's bound to acknowledge what is in flight; confirm what was
  // acknowledged. (A failure ends the loop without a stop: it waits for nothing.)
  auto deadline = stopping_ ? stopDeadline_ : Clock::now();
  // Exactly-once: what Kafka committed is confirmed; the rest stays in the slot (the open Kafka transaction is
  // aborted by the next instance's init_transactions, or times out).
  while (!exactlyOnce() && inflight_.inflightEvents() > 0 && !failedStatus_ && Clock::now() < deadline) {
    auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
    pollfd fd{publisher_->wakeupFd(), POLLIN, 0};
    ::poll(&fd, 1, static_cast<int>(std::clamp<int64_t>(left, 0, 100)));
    pollKafka();
  }
  bool fenced = publisher_ && publisher_->fenced();
  // A fenced relay says nothing more to PostgreSQL: another one holds the transactional id (and the slot).
  if (stream_ && stream_->isStreaming() && !fenced) {  // a setup error before START_REPLICATION: nothing to confirm
    try {
      sendStatus();
    } catch (const std::exception& e) {
      log::warn("could not confirm the final position: {}", e.what());
    }
    // The polite end of the copy stream gets what is left of the bound (at least a moment to send CopyDone).
    auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
    stream_->close(stopping_ ? std::clamp(left, milliseconds(100), milliseconds(5000)) : milliseconds(5000));
  }
  metrics_.streaming.Set(0);
  if (exactlyOnce() && eos_.open) {
    log::warn("the open Kafka transaction ({} events) was not committed before stopping; its events stay "
              "unconfirmed in the slot and are published on the next start",
              eos_.events);
  } else if (!exactlyOnce() && inflight_.inflightEvents() > 0) {
    log::warn(
        "{} events were not acknowledged by Kafka before stopping; they stay unconfirmed in the slot and "
        "are published again on the next start",
        inflight_.inflightEvents());
  }
  log::info("stopped; confirmed position {}", confirmedLsn().toString());
}

}  // namespace outbox
