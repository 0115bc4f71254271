#include "src/TransactionProgress.h"

#include <nlohmann/json.hpp>

namespace outbox {

namespace {

Lsn lsnField(const nlohmann::json& object, const char* name) {
  auto it = object.find(name);
  if (it == object.end() || !it->is_string()) {
    throw std::invalid_argument(std::string("\"") + name + "\" is missing or not a string");
  }
  auto lsn = Lsn::parse(it->get<std::string>());
  if (!lsn) throw std::invalid_argument(std::string("\"") + name + "\" is not a WAL position like \"16/B374D848\"");
  return *lsn;
}

std::string stringField(const nlohmann::json& object, const char* name) {
  auto it = object.find(name);
  if (it == object.end() || !it->is_string()) {
    throw std::invalid_argument(std::string("\"") + name + "\" is missing or not a string");
  }
  return it->get<std::string>();
}

uint64_t unsignedField(const nlohmann::json& object, const char* name, uint64_t max) {
  auto it = object.find(name);
  if (it == object.end() || !it->is_number_unsigned() || it->get<uint64_t>() > max) {
    throw std::invalid_argument(std::string("\"") + name + "\" is missing or not an unsigned integer up to " +
                                std::to_string(max));
  }
  return it->get<uint64_t>();
}

// Whether the unit at `commitLsn` is in Kafka whole according to `record`.
bool includesWhole(const ProgressRecord& record, Lsn commitLsn) {
  // Units arrive in increasing commit LSN: everything up to the last one included whole is in Kafka, and so is
  // everything before a split one.
  if (record.commitLsn != Lsn() && commitLsn <= record.commitLsn) return true;
  return record.partial && commitLsn < record.partial->commitLsn;
}

}  // namespace

std::string ProgressRecord::toJson() const {
  nlohmann::json j = {{"format", kFormat},       {"slot", slot},
                      {"database", database},    {"system_id", systemId},
                      {"timeline", timeline},    {"commit_lsn", commitLsn.toString()},
                      {"end_lsn", endLsn.toString()}};
  if (partial) j["partial"] = {{"commit_lsn", partial->commitLsn.toString()}, {"events", partial->events}};
  if (!time.empty()) j["time"] = time;
  // Replace, not throw, on invalid UTF-8 in names taken from the server: the record must always be writable.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

ProgressRecord ProgressRecord::parse(std::string_view json) {
  if (json.size() > 64 * 1024) throw std::invalid_argument("larger than 64 KiB");
  auto j = nlohmann::json::parse(json.begin(), json.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) throw std::invalid_argument("not a JSON object");
  if (unsignedField(j, "format", 1000) != kFormat) {
    throw std::invalid_argument("\"format\" is not " + std::to_string(kFormat) +
                                " (written by another version of the relay?)");
  }
  ProgressRecord record;
  record.slot = stringField(j, "slot");
  record.database = stringField(j, "database");
  record.systemId = stringField(j, "system_id");
  record.timeline = static_cast<uint32_t>(unsignedField(j, "timeline", UINT32_MAX));
  record.commitLsn = lsnField(j, "commit_lsn");
  record.endLsn = lsnField(j, "end_lsn");
  if (record.endLsn < record.commitLsn) throw std::invalid_argument("\"end_lsn\" is before \"commit_lsn\"");
  auto partial = j.find("partial");
  if (partial != j.end() && !partial->is_null()) {
    if (!partial->is_object()) throw std::invalid_argument("\"partial\" is not an object");
    Partial p;
    p.commitLsn = lsnField(*partial, "commit_lsn");
    p.events = unsignedField(*partial, "events", UINT64_MAX - 1);
    if (p.commitLsn <= record.commitLsn) {
      throw std::invalid_argument("\"partial.commit_lsn\" is not after \"commit_lsn\"");
    }
    record.partial = p;
  }
  auto time = j.find("time");
  if (time != j.end() && !time->is_null()) {
    if (!time->is_string() || time->get_ref<const std::string&>().size() > 64) {
      throw std::invalid_argument("\"time\" is not a string of at most 64 characters");
    }
    record.time = time->get<std::string>();
  }
  return record;
}

void ReplayFilter::reset(const std::optional<ProgressRecord>& committed) { committed_ = committed; }

uint64_t ReplayFilter::beginUnit(Lsn commitLsn) const {
  if (!committed_) return 0;
  if (includesWhole(*committed_, commitLsn)) return kAll;
  if (committed_->partial && commitLsn == committed_->partial->commitLsn) return committed_->partial->events;
  return 0;
}

void ProgressTracker::reset(const ProgressRecord& base) {
  record_ = base;
  open_.reset();
  openEvents_ = 0;
}

void ProgressTracker::beginUnit(Lsn commitLsn, uint64_t alreadyInKafka) {
  open_ = commitLsn;
  openEvents_ = alreadyInKafka;
}

void ProgressTracker::endUnit(Lsn endLsn) {
  if (!open_) return;
  // A unit skipped whole (older than what Kafka has) leaves the record as it is.
  if (!includesWhole(record_, *open_)) {
    record_.commitLsn = *open_;
    record_.endLsn = endLsn;
    record_.partial.reset();
  }
  open_.reset();
  openEvents_ = 0;
}

ProgressRecord ProgressTracker::current() const {
  ProgressRecord record = record_;
  if (open_ && openEvents_ > 0 && !includesWhole(record, *open_)) {
    record.partial = ProgressRecord::Partial{*open_, openEvents_};
  }
  return record;
}

}  // namespace outbox
