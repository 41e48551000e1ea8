#include "env/Masks.h"

#include <optional>

#include "absl/strings/str_cat.h"

namespace mlir_rl::env {

ActionMask blankMask(const SessionConfig &config) {
  ActionSpace space(config);
  int L = config.maxLoops, K = space.numTileChoices(), T = numActionTypes();
  ActionMask m;
  m.type.assign(T, 0);
  m.typeReasons.assign(T, "");
  m.tiles.assign(L, std::vector<uint8_t>(K, 0));
  m.unroll.assign(K, 0);
  m.tilesPeeled.assign(L, std::vector<uint8_t>(K, 0));
  for (auto &row : m.tilesPeeled) row[0] = 1;
  m.interchange.assign(space.numInterchangeChoices(), 0);
  for (auto &row : m.tiles) row[0] = 1;  // "no tiling" is always a legal value
  return m;
}

OpenMask assembleMask(const transforms::OpView &view, const SessionConfig &config) {
  const auto &registry = transforms::registry();
  int L = config.maxLoops, T = numActionTypes();
  OpenMask out;
  ActionMask &m = out.mask;
  m = blankMask(config);
  m.type.assign(T, 1);
  auto block = [&m](int t, std::string why) {
    m.type[t] = 0;
    m.typeReasons[t] = std::move(why);
  };
  if (view.ops.empty()) {
    for (int t = 1; t < T; ++t) block(t, "the op under the cursor is gone");
    out.tiles = m.tiles;
    return out;
  }
  transforms::TileLegality tiles = transforms::tileLegality(view);
  m.tiles = tiles.rows;
  out.tiles = tiles.rows;
  int numLoops = view.numLoops();
  m.numLoops = numLoops;
  if (config.interchangeMode == InterchangeMode::Swaps) {
    for (int s = 0; s < static_cast<int>(m.interchange.size()); ++s)
      m.interchange[s] = transforms::swapPermutation(s, L, numLoops).has_value();
  } else {
    for (int i = 0; i < std::min(numLoops, L); ++i) m.interchange[i] = 1;
  }
  if (numLoops > L) {
    for (int t = 1; t < T; ++t) block(t, absl::StrCat("the op has ", numLoops, " loops, more than max_loops = ", L));
    return out;
  }
  std::optional<transforms::TileLegality> peeled;  // computed once, for the types that read mask_tiles_peeled
  for (int t = 1; t < T; ++t) {
    bool readsPeeled = registry[t]->heads() == transforms::Heads::PeeledTiles;
    if (readsPeeled && !peeled) peeled = transforms::peeledTileLegality(view);
    if (transforms::Refusal why = registry[t]->refusal(view, readsPeeled ? *peeled : tiles))
      block(t, std::move(*why));
    else if (registry[t]->heads() == transforms::Heads::UnrollFactor)
      registry[t]->addHeadValues(view, m.unroll);
    else if (readsPeeled)
      m.tilesPeeled = peeled->rows;
  }
  return out;
}

}  // namespace mlir_rl::env
