#include "env/ActionSpace.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

#include "transforms/Transformation.h"

namespace mlir_rl::env {

int numActionTypes() { return static_cast<int>(transforms::registry().size()); }

std::string actionTypeName(int type) {
  return type >= 0 && type < numActionTypes() ? transforms::registry()[type]->name().str() : "?";
}

ActionSpace::ActionSpace(const SessionConfig &config) : config_(config) {}

int ActionSpace::numInterchangeChoices() const {
  if (config_.interchangeMode == InterchangeMode::Swaps)
    return std::max<int>(1, static_cast<int>(transforms::numSwaps(config_.maxLoops)));
  return config_.maxLoops;
}

std::vector<int64_t> ActionSpace::nvec() const {
  std::vector<int64_t> n{numActionTypes()};
  for (int i = 0; i < config_.maxLoops; ++i) n.push_back(numTileChoices());
  n.push_back(numInterchangeChoices());
  return n;
}

std::vector<std::string> ActionSpace::headNames() const {
  std::vector<std::string> names{"type"};
  for (int i = 0; i < config_.maxLoops; ++i) names.push_back(absl::StrCat("tile_", i));
  names.push_back("interchange");
  return names;
}

std::vector<std::string> ActionSpace::typeNames() const {
  std::vector<std::string> names;
  for (int t = 0; t < numActionTypes(); ++t) names.push_back(actionTypeName(t));
  return names;
}

std::vector<HeadMaskInfo> ActionSpace::headMasks() const {
  std::vector<int> all, tiling, unroll, interchange, peeled;
  for (int t = 0; t < numActionTypes(); ++t) {
    all.push_back(t);
    switch (transforms::registry()[t]->heads()) {
      case transforms::Heads::Tiles: tiling.push_back(t); break;
      case transforms::Heads::UnrollFactor: unroll.push_back(t); break;
      case transforms::Heads::Interchange: interchange.push_back(t); break;
      case transforms::Heads::PeeledTiles: peeled.push_back(t); break;
      case transforms::Heads::None: break;
    }
  }
  std::vector<HeadMaskInfo> masks{{"type", "mask_type", -1, all}};
  for (int i = 0; i < config_.maxLoops; ++i) masks.push_back({absl::StrCat("tile_", i), "mask_tiles", i, tiling});
  masks.push_back({absl::StrCat("tile_", unrollHead()), "mask_unroll", -1, unroll});
  for (int i = 0; i < config_.maxLoops; ++i)
    masks.push_back({absl::StrCat("tile_", i), "mask_tiles_peeled", i, peeled});
  masks.push_back({"interchange", "mask_interchange", -1, interchange});
  return masks;
}

absl::StatusOr<DecodedAction> ActionSpace::decode(const std::vector<int64_t> &values) const {
  if (static_cast<int>(values.size()) != numHeads())
    return absl::InvalidArgumentError(absl::StrCat("action has ", values.size(), " values, expected ", numHeads(),
                                                   " (type, tile_0..tile_", config_.maxLoops - 1, ", interchange)"));
  std::vector<int64_t> n = nvec();
  std::vector<std::string> names = headNames();
  for (size_t i = 0; i < values.size(); ++i)
    if (values[i] < 0 || values[i] >= n[i])
      return absl::InvalidArgumentError(
          absl::StrCat("action value ", values[i], " for head '", names[i], "' is out of range [0, ", n[i], ")"));
  DecodedAction a;
  a.type = static_cast<ActionType>(values[0]);
  for (int i = 0; i < config_.maxLoops; ++i) {
    int64_t choice = values[1 + i];
    a.tileChoices.push_back(choice);
    a.tileSizes.push_back(choice == 0 ? 0 : config_.tileSizes[choice - 1]);
  }
  a.pointer = values.back();
  a.unrollChoice = a.tileChoices[unrollHead()];
  a.unrollFactor = a.tileSizes[unrollHead()];
  return a;
}

absl::Status ActionSpace::checkMask(const DecodedAction &action, const ActionMask &mask) const {
  int t = static_cast<int>(action.type);
  if (!mask.type[t])
    return absl::InvalidArgumentError(
        absl::StrCat("head 'type' = ", t, " (", actionTypeName(t), ") is masked: ", mask.typeReasons[t]));
  // Only the heads the action's type reads.
  transforms::Heads heads = transforms::registry()[t]->heads();
  if (heads == transforms::Heads::Tiles || heads == transforms::Heads::PeeledTiles) {
    const auto &rows = heads == transforms::Heads::Tiles ? mask.tiles : mask.tilesPeeled;
    // Heads past the op's loops are not read (any value is accepted there, e.g. an unroll factor in tile_{L-1}).
    for (int i = 0; i < std::min(mask.numLoops, config_.maxLoops); ++i)
      if (heads == transforms::Heads::PeeledTiles && !rows[i][action.tileChoices[i]])
        return absl::InvalidArgumentError(
            absl::StrCat("head 'tile_", i, "' = ", action.tileChoices[i], " (size ", action.tileSizes[i],
                         ") is masked for PEELED_TILING: the op has no loop ", i,
                         ", the loop is not static, no copy of the op "
                         "has a loop ",
                         i, " that large, or the op is nested too deep for another loop level"));
      else if (!rows[i][action.tileChoices[i]])
        return absl::InvalidArgumentError(absl::StrCat("head 'tile_", i, "' = ", action.tileChoices[i], " (size ",
                                                       action.tileSizes[i], ") is masked: the op has no loop ", i,
                                                       ", the size does not divide its bound, or the op is nested too "
                                                       "deep for another loop level (the mask's reasons say which)"));
  }
  if (heads == transforms::Heads::UnrollFactor && !mask.unroll[action.unrollChoice])
    return absl::InvalidArgumentError(absl::StrCat(
        "head 'tile_", unrollHead(), "' = ", action.unrollChoice, " (unroll factor ", action.unrollFactor,
        ") is masked: the factor must be > 1 and divide the trip count of the innermost loop around the op, and the "
        "op may have at most ",
        transforms::kMaxUnrolledCopies, " copies and ", transforms::kMaxUnrolledElements,
        " iteration-space elements over all copies"));
  if (heads == transforms::Heads::Interchange && !mask.interchange[action.pointer])
    return absl::InvalidArgumentError(
        config_.interchangeMode == InterchangeMode::Swaps
            ? absl::StrCat("head 'interchange' = ", action.pointer, " is masked: the swap names a loop the op lacks")
            : absl::StrCat("head 'interchange' = ", action.pointer,
                           " is masked: no such loop, or it is already placed"));
  return absl::OkStatus();
}

}  // namespace mlir_rl::env
