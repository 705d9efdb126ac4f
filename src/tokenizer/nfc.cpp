// NFC normalisation (UAX #15) over UTF-8.
//
// 1. Decompose each code point fully and canonically (table kDecomp, Hangul syllables by the
//    arithmetic of Unicode section 3.12: S = SBase + (L * VCount + V) * TCount + T).
// 2. Canonical ordering: within every run of non-starters (combining class > 0), stable-sort by
//    class.
// 3. Canonical composition: each character C after the last starter S combines with it when the
//    pair (S, C) has a primary composite and C is not blocked (no character between them with a
//    class of 0 or >= C's class); Hangul L+V and LV+T compose arithmetically.
// Each code point carries the byte offset of the input character it came from, so the tokenizer
// can report offsets into the original text.
#include "tokenizer/nfc.h"

#include <algorithm>
#include <cstdint>

#include "tokenizer/unicode.h"

namespace safedec {
namespace unicode {
namespace {

struct CccRange {
  uint32_t first, last;
  uint8_t ccc;
};
struct DecompEntry {
  uint32_t cp;
  uint16_t offset;
  uint8_t length;
};
struct ComposePair {
  uint32_t first, second, composite;
};
#include "tokenizer/nfc_tables.inc"

constexpr uint32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr uint32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;
constexpr uint32_t kInvalid = 0xFFFFFFFFu;  // marks an invalid input byte (kept as is, a starter)

int ccc_of(uint32_t cp) {
  if (cp < 0x300 || cp == kInvalid) return 0;
  const auto* end = kCcc + sizeof(kCcc) / sizeof(kCcc[0]);
  const auto* it = std::upper_bound(kCcc, end, cp, [](uint32_t c, const CccRange& r) { return c < r.first; });
  if (it == kCcc) return 0;
  --it;
  return cp <= it->last ? it->ccc : 0;
}

const DecompEntry* decomp_of(uint32_t cp) {
  if (cp < 0xC0) return nullptr;
  const auto* end = kDecomp + sizeof(kDecomp) / sizeof(kDecomp[0]);
  const auto* it = std::lower_bound(kDecomp, end, cp, [](const DecompEntry& e, uint32_t c) { return e.cp < c; });
  return it != end && it->cp == cp ? it : nullptr;
}

uint32_t compose(uint32_t a, uint32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase && b < kTBase + kTCount)
    return a + (b - kTBase);
  const auto* end = kCompose + sizeof(kCompose) / sizeof(kCompose[0]);
  const auto* it = std::lower_bound(kCompose, end, ComposePair{a, b, 0}, [](const ComposePair& x, const ComposePair& y) {
    return x.first != y.first ? x.first < y.first : x.second < y.second;
  });
  return it != end && it->first == a && it->second == b ? it->composite : kInvalid;
}

struct Cp {
  uint32_t cp;
  uint8_t ccc;
  uint8_t raw;  // the byte itself when cp == kInvalid
  size_t origin;
};

uint32_t decode_at(const std::string& s, size_t i, size_t len) {
  const auto b = [&](size_t k) { return static_cast<uint32_t>(static_cast<unsigned char>(s[i + k])); };
  switch (len) {
    case 1: return b(0);
    case 2: return ((b(0) & 0x1F) << 6) | (b(1) & 0x3F);
    case 3: return ((b(0) & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
    default: return ((b(0) & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
  }
}

void push_decomposed(uint32_t cp, size_t origin, std::vector<Cp>* out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const uint32_t s = cp - kSBase;
    out->push_back({kLBase + s / kNCount, 0, 0, origin});
    out->push_back({kVBase + (s % kNCount) / kTCount, 0, 0, origin});
    if (s % kTCount) out->push_back({kTBase + s % kTCount, 0, 0, origin});
    return;
  }
  if (const DecompEntry* d = decomp_of(cp)) {
    for (int k = 0; k < d->length; ++k) {
      const uint32_t c = kDecompData[d->offset + k];
      out->push_back({c, static_cast<uint8_t>(ccc_of(c)), 0, origin});
    }
    return;
  }
  out->push_back({cp, static_cast<uint8_t>(ccc_of(cp)), 0, origin});
}

}  // namespace

bool nfc_trivially_stable(const std::string& text, size_t begin, size_t end) {
  // Every code point below U+0300 is NFC-stable and never combines with what follows it unless a
  // combining mark (>= U+0300) comes next; UTF-8 lead bytes below 0xCC encode code points < U+0300.
  for (size_t i = begin; i < end; ++i)
    if (static_cast<unsigned char>(text[i]) >= 0xCC) return false;
  return true;
}

void nfc_append(const std::string& text, size_t begin, size_t end, std::string* out, std::vector<size_t>* origin) {
  if (nfc_trivially_stable(text, begin, end)) {
    out->append(text, begin, end - begin);
    if (origin)
      for (size_t i = begin; i < end; ++i) origin->push_back(i);
    return;
  }
  // 1. decompose
  std::vector<Cp> cps;
  cps.reserve(end - begin + 8);
  const std::string sub = text.substr(begin, end - begin);
  for (size_t i = 0; i < sub.size();) {
    const size_t len = utf8_valid_len(sub, i);
    if (len == 0) {
      cps.push_back({kInvalid, 0, static_cast<uint8_t>(sub[i]), begin + i});
      ++i;
      continue;
    }
    push_decomposed(decode_at(sub, i, len), begin + i, &cps);
    i += len;
  }
  // 2. canonical ordering of every run of non-starters
  for (size_t i = 0; i < cps.size();) {
    if (cps[i].ccc == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < cps.size() && cps[j].ccc != 0) ++j;
    std::stable_sort(cps.begin() + static_cast<std::ptrdiff_t>(i), cps.begin() + static_cast<std::ptrdiff_t>(j),
                     [](const Cp& a, const Cp& b) { return a.ccc < b.ccc; });
    i = j;
  }
  // 3. canonical composition (in place: `kept` is the length of the output prefix)
  size_t kept = 0;
  long starter = -1;  // index in the output prefix of the last starter, -1 if none
  int last_ccc = -1;  // class of the last character kept after that starter (-1: none yet)
  for (size_t i = 0; i < cps.size(); ++i) {
    const Cp c = cps[i];
    if (starter >= 0 && c.cp != kInvalid && cps[static_cast<size_t>(starter)].cp != kInvalid) {
      // Not blocked: nothing between, or everything between has a lower nonzero class.
      const bool blocked = last_ccc != -1 && (last_ccc == 0 || last_ccc >= c.ccc);
      if (!blocked) {
        const uint32_t comp = compose(cps[static_cast<size_t>(starter)].cp, c.cp);
        if (comp != kInvalid) {
          cps[static_cast<size_t>(starter)].cp = comp;
          cps[static_cast<size_t>(starter)].ccc = static_cast<uint8_t>(ccc_of(comp));
          continue;  // c is consumed; last_ccc unchanged
        }
      }
    }
    if (c.ccc == 0) {
      starter = static_cast<long>(kept);
      last_ccc = -1;
    } else {
      last_ccc = c.ccc;
    }
    cps[kept++] = c;
  }
  cps.resize(kept);
  for (const Cp& c : cps) {
    if (c.cp == kInvalid) {
      out->push_back(static_cast<char>(c.raw));
      if (origin) origin->push_back(c.origin);
      continue;
    }
    const std::string u = utf8_encode(c.cp);
    out->append(u);
    if (origin) origin->insert(origin->end(), u.size(), c.origin);
  }
}

std::string nfc(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  nfc_append(text, 0, text.size(), &out, nullptr);
  return out;
}

}  // namespace unicode
}  // namespace safedec
