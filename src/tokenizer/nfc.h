// Unicode NFC normalisation (UAX #15: canonical decomposition, canonical ordering, canonical
// composition), the normaliser of the Qwen2 tokenizer (HF tokenizers' NFC). Tables in
// nfc_tables.inc are generated from Python's unicodedata by gen_nfc_tables.py.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

namespace safedec {
namespace unicode {

// NFC of text. Bytes that are not valid UTF-8 pass through unchanged and block composition.
std::string nfc(const std::string& text);
// NFC of text[begin, end), appended to out; for every byte appended, origin gets the offset in
// text of the character it came from (a composed character: the offset of its first part).
void nfc_append(const std::string& text, size_t begin, size_t end, std::string* out, std::vector<size_t>* origin);
// True if NFC leaves text[begin, end) unchanged for certain (every code point below U+0300, which
// holds for all ASCII and Latin-1 text); false means "normalise to find out".
bool nfc_trivially_stable(const std::string& text, size_t begin, size_t end);

}  // namespace unicode
}  // namespace safedec
