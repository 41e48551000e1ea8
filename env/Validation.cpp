#include "env/Validation.h"

#include <functional>
#include <map>
#include <optional>
#include <set>
#include <vector>

#include <dlfcn.h>

#include "absl/strings/str_cat.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/MathExtras.h"
#include "llvm/Support/raw_ostream.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Dialect/Tosa/IR/TosaOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Matchers.h"
#include "mlir/IR/Verifier.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"

#include "runners/Evaluator.h"
#include "support/Context.h"
#include "support/Diagnostics.h"

namespace mlir_rl::env {

namespace {

absl::Status invalid(const std::string &what, std::optional<mlir::Location> loc = std::nullopt) {
  std::string where;
  if (loc) where = support::formatLocation(*loc) + ": ";
  return absl::InvalidArgumentError(absl::StrCat("invalid benchmark: ", where, what));
}

// Dialects a kernel may use after TOSA conversion.
const std::set<llvm::StringRef> &allowedDialects() {
  static const std::set<llvm::StringRef> dialects = {"builtin", "func", "linalg", "tensor", "arith", "math"};
  return dialects;
}

// Bytes of a static tensor type (-1 when they overflow int64).
int64_t bytesOf(mlir::RankedTensorType t) {
  mlir::Type e = t.getElementType();
  int64_t bits = e.isIntOrFloat() ? e.getIntOrFloatBitWidth() : 64;
  return tensorBytes(t.getShape(), bits);
}

std::string typeString(mlir::Type type) {
  std::string text;
  llvm::raw_string_ostream os(text);
  os << type;
  return os.str();
}

absl::Status checkType(mlir::Type type, mlir::Location loc, const UploadLimits &limits) {
  if (auto tensor = mlir::dyn_cast<mlir::RankedTensorType>(type)) {
    if (!tensor.hasStaticShape())
      return invalid("dynamic shapes are not supported (every dimension must be static)", loc);
    if (tensor.getEncoding()) return invalid("tensor encodings (e.g. sparse tensors) are not supported", loc);
    int64_t bytes = bytesOf(tensor);
    if (bytes < 0 || bytes > limits.maxTensorBytes)
      return invalid(
          absl::StrCat("a value of type ", typeString(type), " takes ",
                       bytes < 0 ? "more than 2^63" : std::to_string(bytes), " bytes, more than the limit of ",
                       limits.maxTensorBytes, " per tensor (--max_tensor_mb)"),
          loc);
    return absl::OkStatus();
  }
  if (mlir::isa<mlir::UnrankedTensorType>(type)) return invalid("unranked tensors are not supported", loc);
  if (mlir::isa<mlir::BaseMemRefType>(type))
    return invalid("memrefs are not accepted: write the kernel on tensors", loc);
  if (type.isIntOrIndexOrFloat() || mlir::isa<mlir::FunctionType>(type)) return absl::OkStatus();
  return invalid("values of type " + typeString(type) + " are not supported", loc);
}

bool hasTosa(mlir::ModuleOp module) {
  bool found = false;
  module.walk([&](mlir::Operation *op) {
    if (op->getDialect() && op->getDialect()->getNamespace() == "tosa") {
      found = true;
      return mlir::WalkResult::interrupt();
    }
    return mlir::WalkResult::advance();
  });
  return found;
}

constexpr const char *kAllowedDialects = "(allowed dialects: func, linalg, tensor, arith, math, tosa)";

constexpr const char *kTosaPipeline =
    "func.func(tosa-optional-decompositions,tosa-to-linalg-named,tosa-to-linalg,tosa-to-arith,tosa-to-tensor),"
    "canonicalize,cse";

absl::Status convertTosa(mlir::ModuleOp module, support::DiagnosticCapture &capture) {
  mlir::PassManager pm(module.getContext());
  std::string errors;
  llvm::raw_string_ostream es(errors);
  if (mlir::failed(mlir::parsePassPipeline(kTosaPipeline, pm, es)))
    return absl::InternalError("TOSA pipeline: " + es.str());
  if (mlir::failed(pm.run(module))) return invalid("TOSA to Linalg conversion failed: " + capture.take());
  return absl::OkStatus();
}

// Calls must target functions defined in the module, and the call graph must be acyclic.
absl::Status checkCalls(mlir::ModuleOp module) {
  std::map<std::string, std::vector<std::string>> callees;
  absl::Status status = absl::OkStatus();
  module.walk([&](mlir::func::CallOp call) {
    auto target = module.lookupSymbol<mlir::func::FuncOp>(call.getCallee());
    if (!target || target.isExternal()) {
      status = invalid(absl::StrCat("call to external function @", call.getCallee().str(),
                                    " (only functions defined in the module may be called)"),
                       call.getLoc());
      return mlir::WalkResult::interrupt();
    }
    auto caller = call->getParentOfType<mlir::func::FuncOp>();
    callees[caller.getSymName().str()].push_back(call.getCallee().str());
    return mlir::WalkResult::advance();
  });
  if (!status.ok()) return status;
  std::map<std::string, int> state;  // 0 unvisited, 1 on stack, 2 done
  std::function<bool(const std::string &)> cyclic = [&](const std::string &f) {
    if (state[f] == 1) return true;
    if (state[f] == 2) return false;
    state[f] = 1;
    for (const std::string &g : callees[f])
      if (cyclic(g)) return true;
    state[f] = 2;
    return false;
  };
  for (auto func : module.getOps<mlir::func::FuncOp>())
    if (cyclic(func.getSymName().str()))
      return invalid(absl::StrCat("recursive calls (through @", func.getSymName().str(), ") are not supported"),
                     func.getLoc());
  return absl::OkStatus();
}

// ---- Data-dependent indexing ---------------------------------------------------------------------------------

std::optional<int64_t> constantIndex(mlir::Value v) {
  llvm::APInt value;
  if (mlir::matchPattern(v, mlir::m_ConstantInt(&value))) return value.getSExtValue();
  return std::nullopt;
}

// `index` clamped into [0, upper] with arith ops inserted before the builder's insertion point.
mlir::Value clampIndex(mlir::OpBuilder &b, mlir::Location loc, mlir::Value index, int64_t upper) {
  mlir::Value zero = b.create<mlir::arith::ConstantIndexOp>(loc, 0);
  mlir::Value top = b.create<mlir::arith::ConstantIndexOp>(loc, upper);
  mlir::Value low = b.create<mlir::arith::MaxSIOp>(loc, index, zero);
  return b.create<mlir::arith::MinSIOp>(loc, low, top);
}

// Element indices of tensor.extract / tensor.insert: constants must be in bounds; any other index is clamped into
// [0, dim - 1], so no input data can make the kernel read or write outside the tensor.
absl::Status boundElementIndices(mlir::Operation *op, mlir::RankedTensorType type, mlir::OperandRange indices) {
  mlir::OpBuilder b(op);
  unsigned first = indices.getBeginOperandIndex();
  for (auto [d, index] : llvm::enumerate(indices)) {
    int64_t dim = type.getDimSize(static_cast<unsigned>(d));
    if (std::optional<int64_t> c = constantIndex(index)) {
      if (*c < 0 || *c >= dim)
        return invalid(absl::StrCat("'", op->getName().getStringRef().str(), "' index ", *c, " is outside dimension ",
                                    d, " of size ", dim),
                       op->getLoc());
      continue;
    }
    op->setOperand(first + static_cast<unsigned>(d), clampIndex(b, op->getLoc(), index, dim - 1));
  }
  return absl::OkStatus();
}

// Offsets, sizes and strides of tensor.extract_slice / tensor.insert_slice: sizes and strides must be constants;
// a constant offset must keep the slice inside the tensor, any other offset is clamped so that it does.
absl::Status boundSlice(mlir::OffsetSizeAndStrideOpInterface slice, mlir::RankedTensorType whole) {
  mlir::Operation *op = slice.getOperation();
  std::string name = op->getName().getStringRef().str();
  if (!slice.getSizes().empty() || !slice.getStrides().empty())
    return invalid(absl::StrCat("'", name, "' with sizes or strides computed at run time is not supported"),
                   op->getLoc());
  llvm::ArrayRef<int64_t> sizes = slice.getStaticSizes(), strides = slice.getStaticStrides(),
                          offsets = slice.getStaticOffsets();
  mlir::OpBuilder b(op);
  unsigned nextOffsetOperand = slice.getOffsets().getBeginOperandIndex();
  for (size_t d = 0; d < offsets.size() && d < static_cast<size_t>(whole.getRank()); ++d) {
    int64_t dim = whole.getDimSize(static_cast<unsigned>(d));
    // The last element the slice touches is offset + (size - 1) * stride.
    int64_t span = 0;
    if (sizes[d] < 0 || strides[d] < 1 || llvm::MulOverflow(sizes[d] > 0 ? sizes[d] - 1 : 0, strides[d], span) ||
        span >= dim)
      return invalid(absl::StrCat("'", name, "' dimension ", d, ": ", sizes[d], " elements with stride ", strides[d],
                                  " do not fit in size ", dim),
                     op->getLoc());
    int64_t lastOffset = dim - 1 - span;
    if (!mlir::ShapedType::isDynamic(offsets[d])) {
      if (offsets[d] < 0 || offsets[d] > lastOffset)
        return invalid(absl::StrCat("'", name, "' dimension ", d, ": offset ", offsets[d],
                                    " puts the slice outside "
                                    "size ",
                                    dim),
                       op->getLoc());
      continue;
    }
    unsigned operand = nextOffsetOperand++;
    op->setOperand(operand, clampIndex(b, op->getLoc(), op->getOperand(operand), lastOffset));
  }
  return absl::OkStatus();
}

// Makes every index computed at run time stay inside its tensor, and refuses the ops whose run-time operands could
// not be bounded that way.
absl::Status boundIndexing(mlir::ModuleOp module) {
  absl::Status status = absl::OkStatus();
  llvm::SmallVector<mlir::Operation *> ops;
  module.walk([&](mlir::Operation *op) { ops.push_back(op); });
  for (mlir::Operation *op : ops) {
    if (auto extract = mlir::dyn_cast<mlir::tensor::ExtractOp>(op)) {
      status = boundElementIndices(op, extract.getTensor().getType(), extract.getIndices());
    } else if (auto insert = mlir::dyn_cast<mlir::tensor::InsertOp>(op)) {
      status = boundElementIndices(op, insert.getDest().getType(), insert.getIndices());
    } else if (auto slice = mlir::dyn_cast<mlir::tensor::ExtractSliceOp>(op)) {
      status = boundSlice(slice, slice.getSourceType());
    } else if (auto slice = mlir::dyn_cast<mlir::tensor::InsertSliceOp>(op)) {
      status = boundSlice(slice, slice.getDestType());
    } else if (auto pad = mlir::dyn_cast<mlir::tensor::PadOp>(op)) {
      if (!pad.getLow().empty() || !pad.getHigh().empty())
        status = invalid("'tensor.pad' with padding computed at run time is not supported", op->getLoc());
    } else if (auto dim = mlir::dyn_cast<mlir::tensor::DimOp>(op)) {
      std::optional<int64_t> index = constantIndex(dim.getIndex());
      int64_t rank = mlir::cast<mlir::ShapedType>(dim.getSource().getType()).getRank();
      if (!index || *index < 0 || *index >= rank)
        status = invalid("'tensor.dim' needs a constant dimension index within the rank", op->getLoc());
    } else if (mlir::isa<mlir::tensor::GatherOp, mlir::tensor::ScatterOp, mlir::tensor::ReshapeOp>(op)) {
      status = invalid(absl::StrCat("'", op->getName().getStringRef().str(),
                                    "' is not supported (its indices or shape "
                                    "come from data; use linalg.generic with tensor.extract, or "
                                    "tensor.expand_shape / tensor.collapse_shape)"),
                       op->getLoc());
    }
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

// Symbols of the libraries the JIT links kernels against, opened once (never closed) without running anything of
// theirs that is not already loaded.
const std::vector<void *> &jitLibraryHandles() {
  static const std::vector<void *> handles = [] {
    std::vector<void *> out;
    for (const std::string &path : runners::jitSharedLibraries())
      if (void *h = dlopen(path.c_str(), RTLD_LAZY | RTLD_LOCAL)) out.push_back(h);
    return out;
  }();
  return handles;
}

}  // namespace

int64_t tensorBytes(llvm::ArrayRef<int64_t> shape, int64_t elementBits) {
  int64_t bytes = std::max<int64_t>(1, (elementBits + 7) / 8);
  for (int64_t d : shape)
    if (d < 0 || llvm::MulOverflow(bytes, d, bytes)) return -1;
  return bytes;
}

std::string functionNameBlocker(llvm::StringRef name) {
  auto isIdentifierChar = [](char c) { return llvm::isAlnum(c) || c == '_'; };
  if (name.empty() || llvm::isDigit(name.front()) || !llvm::all_of(name, isIdentifierChar))
    return absl::StrCat("function name @\"", name.str(), "\" is not a plain identifier ([A-Za-z_][A-Za-z0-9_]*)");
  for (llvm::StringRef reserved : {"_mlir", "__", "mlir", "omp_", "kmp_", "ompt_", "llvm"})
    if (name.starts_with(reserved))
      return absl::StrCat("function name @", name.str(), " starts with '", reserved.str(), "', which is reserved");
  std::string symbol = name.str();
  bool known = dlsym(RTLD_DEFAULT, symbol.c_str()) != nullptr;
  for (void *handle : jitLibraryHandles()) known = known || dlsym(handle, symbol.c_str()) != nullptr;
  if (known)
    return absl::StrCat("function name @", symbol,
                        " is a symbol of the C library or of a runtime the kernel is linked "
                        "with (it would replace or clash with it): rename the function");
  return "";
}

namespace {

// The offset of the first character at or after `i` that is neither white space nor in a '//' comment (text.size()
// at the end).
size_t skipBlanks(std::string_view text, size_t i) {
  while (i < text.size()) {
    if (llvm::isSpace(text[i])) {
      ++i;
    } else if (text.substr(i, 2) == "//") {
      while (i < text.size() && text[i] != '\n') ++i;
    } else {
      break;
    }
  }
  return i;
}

// Whether what follows `at` (after blanks) is properties '<...>' that do not open with a dictionary: after a Linalg
// op's name or after linalg.generic's attribute dictionary, MLIR 19's structured-op parser reads such properties and
// casts them to a dictionary unchecked (`linalg.fill <5> ...` crashed the process).
bool nonDictionaryProperties(std::string_view text, size_t at) {
  size_t open = skipBlanks(text, at);
  return open < text.size() && text[open] == '<' && skipBlanks(text, open + 1) < text.size() &&
         text[skipBlanks(text, open + 1)] != '{';
}

}  // namespace

absl::Status checkUploadText(std::string_view text, const UploadLimits &limits) {
  if (text.empty()) return invalid("the MLIR text is empty");
  if (text.size() > limits.maxTextBytes)
    return invalid(absl::StrCat("the MLIR text has ", text.size(), " bytes, more than the limit of ",
                                limits.maxTextBytes, " (--max_upload_kb)"));
  // Bracket nesting, outside string literals and comments. '>' closes '<' except in '->' and '>='.
  auto propertiesError = [&](int line, llvm::StringRef after) {
    return invalid(absl::StrCat("upload:", line, ": the properties <...> after ", after.str(),
                                " are not a dictionary; write <{name = value, ...}> or put the attributes in the "
                                "op's attribute dictionary (MLIR 19's Linalg parser would crash on them)"));
  };
  auto identifierChar = [](char ch) { return llvm::isAlnum(ch) || ch == '_' || ch == '.' || ch == '$'; };
  int depth = 0, line = 1;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    switch (c) {
      case '\0': return invalid(absl::StrCat("the MLIR text contains a NUL byte at offset ", i));
      case '\n': ++line; break;
      case '"':  // a string literal, with backslash escapes
        for (++i; i < text.size() && text[i] != '"' && text[i] != '\n'; ++i)
          if (text[i] == '\\') ++i;
        break;
      case '/':
        if (i + 1 < text.size() && text[i + 1] == '/')
          while (i + 1 < text.size() && text[i + 1] != '\n') ++i;
        break;
      case '{':
      case '(':
      case '[':
      case '<':
        if (++depth > limits.maxNesting)
          return invalid(absl::StrCat("upload:", line, ": brackets nest more than ", limits.maxNesting,
                                      " levels deep (--max_upload_nesting)"));
        break;
      case '>':
        if ((i > 0 && text[i - 1] == '-') || (i + 1 < text.size() && text[i + 1] == '=')) break;
        [[fallthrough]];
      case ')':
      case ']': depth = std::max(0, depth - 1); break;
      case '}':  // linalg.generic {...} <...>
        depth = std::max(0, depth - 1);
        if (nonDictionaryProperties(text, i + 1)) return propertiesError(line, "an attribute dictionary");
        break;
      default:
        // An op name: linalg.fill <...>
        if (c == 'l' && text.substr(i, 7) == "linalg." &&
            (i == 0 || !(identifierChar(text[i - 1]) || llvm::StringRef("#!%@^").contains(text[i - 1])))) {
          size_t end = i;
          while (end < text.size() && identifierChar(text[end])) ++end;
          if (nonDictionaryProperties(text, end))
            return propertiesError(line, "'" + std::string(text.substr(i, end - i)) + "'");
          i = end - 1;
        }
        break;
    }
  }
  return absl::OkStatus();
}

std::unique_ptr<mlir::MLIRContext> createUploadContext() {
  mlir::DialectRegistry registry;
  registry.insert<mlir::func::FuncDialect, mlir::linalg::LinalgDialect, mlir::tensor::TensorDialect,
                  mlir::arith::ArithDialect, mlir::math::MathDialect, mlir::tosa::TosaDialect>();
  mlir::registerAllExtensions(registry);
  std::unique_ptr<mlir::MLIRContext> ctx = support::createContext(registry);
  // The TOSA conversion's dialects too, now: a pass manager loads them when it first runs, and loading while other
  // threads parse in the same context is not safe.
  mlir::PassManager pm(ctx.get());
  std::string errors;
  llvm::raw_string_ostream es(errors);
  if (mlir::failed(mlir::parsePassPipeline(kTosaPipeline, pm, es)))
    llvm::report_fatal_error(llvm::Twine("TOSA pipeline: ") + es.str());
  mlir::DialectRegistry passDialects;
  pm.getDependentDialects(passDialects);
  ctx->appendDialectRegistry(passDialects);
  ctx->loadAllAvailableDialects();
  return ctx;
}

absl::StatusOr<mlir::OwningOpRef<mlir::ModuleOp>> parseUpload(mlir::MLIRContext *ctx, const std::string &text,
                                                              const std::string &sourceName,
                                                              const UploadLimits &limits) {
  if (absl::Status s = checkUploadText(text, limits); !s.ok()) return s;
  support::DiagnosticCapture capture;
  mlir::ParserConfig config(ctx, /*verifyAfterParse=*/true);
  mlir::OwningOpRef<mlir::ModuleOp> module = mlir::parseSourceString<mlir::ModuleOp>(text, config, sourceName);
  if (!module) {
    std::string diagnostics = capture.take();
    // An operation of a dialect the upload context does not load: say it is not allowed, as for one that parsed.
    llvm::StringRef d(diagnostics);
    if (size_t at = d.find(" not found for custom op '"); at != llvm::StringRef::npos) {
      llvm::StringRef op = d.drop_front(at).split('\'').second.split('\'').first;
      llvm::StringRef where = d.take_front(at);
      if (size_t nl = where.rfind('\n'); nl != llvm::StringRef::npos) where = where.drop_front(nl + 1);
      where = where.split(": error:").first;
      return invalid(absl::StrCat(where.str(), ": operation '", op.str(), "' is not allowed ", kAllowedDialects));
    }
    return invalid("it does not parse:\n" + diagnostics);
  }

  // Allow-list before anything else touches the IR (TOSA is accepted here and converted below).
  int64_t ops = 0;
  absl::Status status = absl::OkStatus();
  module->walk<mlir::WalkOrder::PreOrder>([&](mlir::Operation *op) {
    ++ops;
    llvm::StringRef dialect = op->getDialect() ? op->getDialect()->getNamespace() : "";
    if (!allowedDialects().count(dialect) && dialect != "tosa") {
      status = invalid(
          absl::StrCat("operation '", op->getName().getStringRef().str(), "' is not allowed ", kAllowedDialects),
          op->getLoc());
      return mlir::WalkResult::interrupt();
    }
    return mlir::WalkResult::advance();
  });
  if (!status.ok()) return status;
  if (ops > limits.maxOps)
    return invalid(absl::StrCat("the module has ", ops, " operations, more than the limit of ", limits.maxOps,
                                " (--max_upload_ops)"));
  for (auto func : module->getOps<mlir::func::FuncOp>()) {
    if (func.isExternal())
      return invalid(absl::StrCat("external function @", func.getSymName().str(),
                                  " (declarations of outside symbols are not allowed)"),
                     func.getLoc());
    if (std::string why = functionNameBlocker(func.getSymName()); !why.empty()) return invalid(why, func.getLoc());
  }

  if (hasTosa(*module)) {
    if (absl::Status s = convertTosa(*module, capture); !s.ok()) return s;
    if (hasTosa(*module)) return invalid("some TOSA operations have no Linalg lowering");
  }

  // Types, limits and operations of the (converted) module.
  module->walk<mlir::WalkOrder::PreOrder>([&](mlir::Operation *op) {
    llvm::StringRef dialect = op->getDialect() ? op->getDialect()->getNamespace() : "";
    if (!allowedDialects().count(dialect)) {
      status =
          invalid(absl::StrCat("operation '", op->getName().getStringRef().str(), "' is not allowed"), op->getLoc());
      return mlir::WalkResult::interrupt();
    }
    for (mlir::Type t : op->getResultTypes())
      if (status = checkType(t, op->getLoc(), limits); !status.ok()) return mlir::WalkResult::interrupt();
    for (mlir::Region &region : op->getRegions())
      for (mlir::Block &block : region)
        for (mlir::BlockArgument arg : block.getArguments())
          if (status = checkType(arg.getType(), op->getLoc(), limits); !status.ok())
            return mlir::WalkResult::interrupt();
    return mlir::WalkResult::advance();
  });
  if (!status.ok()) return status;
  if (absl::Status s = checkCalls(*module); !s.ok()) return s;
  for (auto func : module->getOps<mlir::func::FuncOp>()) {
    if (!func.isPublic()) continue;
    int64_t argBytes = 0;
    for (mlir::Type t : func.getArgumentTypes())
      if (auto tensor = mlir::dyn_cast<mlir::RankedTensorType>(t))
        argBytes = std::min<int64_t>(limits.maxArgumentBytes + 1, argBytes + bytesOf(tensor));  // each <= 2^62
    if (argBytes > limits.maxArgumentBytes)
      return invalid(absl::StrCat("the kernel's arguments take more than the limit of ", limits.maxArgumentBytes,
                                  " bytes (--max_argument_mb)"),
                     func.getLoc());
  }
  if (absl::Status s = boundIndexing(*module); !s.ok()) return s;
  if (mlir::failed(mlir::verify(*module))) return invalid("it does not verify:\n" + capture.take());
  return module;
}

}  // namespace mlir_rl::env
