func.func @s(%a: tensor<16xf32>, %i: tensor<1xi64>) -> tensor<16xf32> {
  %c0 = arith.constant 0 : index
  %n = tensor.extract %i[%c0] : tensor<1xi64>
  %o = arith.index_cast %n : i64 to index
  %s = tensor.extract_slice %a[%o] [4] [2] : tensor<16xf32> to tensor<4xf32>
  %r = tensor.insert_slice %s into %a[%o] [4] [1] : tensor<4xf32> into tensor<16xf32>
  %p = tensor.pad %s low[1] high[2] { ^bb0(%x: index): tensor.yield %n : i64 } : tensor<4xf32> to tensor<7xf32>
  return %r : tensor<16xf32>
}
