// Simulation model of the ECP5 DP16KD block RAM in the one configuration mmfree instantiates
// (mmfree.hw.ternary.TernaryMatVec._dp16kd): 36-bit pseudo dual port, 512 words.
//   port A writes: address ADA13..ADA5, data {DIB17..DIB0, DIA17..DIA0}, byte enables ADA3..ADA0
//     (bits 8:0, 17:9, 26:18, 35:27), when CEA and WEA at the rising edge of CLKA;
//   port B reads: address ADB13..ADB5, when CEB at the rising edge of CLKB, into the data latch;
//     REGMODE_A = REGMODE_B = "NOREG": {DOB, DOA} is the latch; both "OUTREG": a register loaded from
//     the latch at the rising edge of CLKB when OCEB (mmfree drives CLKA and CLKB with one clock and
//     OCEA and OCEB alike, so which of them clocks the half on DOA is immaterial and not modelled).
//   RSTA and RSTB must stay low (mmfree ties them low): the model stops the simulation if one rises.
// Any other configuration stops the simulation: this model does not describe it.
module DP16KD(
  input DIA17, DIA16, DIA15, DIA14, DIA13, DIA12, DIA11, DIA10, DIA9, DIA8, DIA7, DIA6, DIA5, DIA4, DIA3, DIA2, DIA1, DIA0,
  input ADA13, ADA12, ADA11, ADA10, ADA9, ADA8, ADA7, ADA6, ADA5, ADA4, ADA3, ADA2, ADA1, ADA0,
  input CEA, OCEA, CLKA, WEA, RSTA,
  input CSA2, CSA1, CSA0,
  output DOA17, DOA16, DOA15, DOA14, DOA13, DOA12, DOA11, DOA10, DOA9, DOA8, DOA7, DOA6, DOA5, DOA4, DOA3, DOA2, DOA1, DOA0,
  input DIB17, DIB16, DIB15, DIB14, DIB13, DIB12, DIB11, DIB10, DIB9, DIB8, DIB7, DIB6, DIB5, DIB4, DIB3, DIB2, DIB1, DIB0,
  input ADB13, ADB12, ADB11, ADB10, ADB9, ADB8, ADB7, ADB6, ADB5, ADB4, ADB3, ADB2, ADB1, ADB0,
  input CEB, OCEB, CLKB, WEB, RSTB,
  input CSB2, CSB1, CSB0,
  output DOB17, DOB16, DOB15, DOB14, DOB13, DOB12, DOB11, DOB10, DOB9, DOB8, DOB7, DOB6, DOB5, DOB4, DOB3, DOB2, DOB1, DOB0
);
  parameter DATA_WIDTH_A = 18;
  parameter DATA_WIDTH_B = 18;
  parameter REGMODE_A = "NOREG";
  parameter REGMODE_B = "NOREG";
  parameter RESETMODE = "SYNC";
  parameter ASYNC_RESET_RELEASE = "SYNC";
  parameter CSDECODE_A = "0b000";
  parameter CSDECODE_B = "0b000";
  parameter WRITEMODE_A = "NORMAL";
  parameter WRITEMODE_B = "NORMAL";
  parameter GSR = "ENABLED";

  wire [35:0] din = {DIB17, DIB16, DIB15, DIB14, DIB13, DIB12, DIB11, DIB10, DIB9, DIB8, DIB7, DIB6, DIB5, DIB4, DIB3, DIB2, DIB1, DIB0,
                     DIA17, DIA16, DIA15, DIA14, DIA13, DIA12, DIA11, DIA10, DIA9, DIA8, DIA7, DIA6, DIA5, DIA4, DIA3, DIA2, DIA1, DIA0};
  wire [8:0] waddr = {ADA13, ADA12, ADA11, ADA10, ADA9, ADA8, ADA7, ADA6, ADA5};
  wire [8:0] raddr = {ADB13, ADB12, ADB11, ADB10, ADB9, ADB8, ADB7, ADB6, ADB5};
  wire [3:0] byte_en = {ADA3, ADA2, ADA1, ADA0};

  reg [35:0] mem [0:511];
  reg [35:0] latch = 36'd0;
  reg [35:0] oreg = 36'd0;
  wire [35:0] dout = (REGMODE_B == "OUTREG") ? oreg : latch;
  assign {DOB17, DOB16, DOB15, DOB14, DOB13, DOB12, DOB11, DOB10, DOB9, DOB8, DOB7, DOB6, DOB5, DOB4, DOB3, DOB2, DOB1, DOB0,
          DOA17, DOA16, DOA15, DOA14, DOA13, DOA12, DOA11, DOA10, DOA9, DOA8, DOA7, DOA6, DOA5, DOA4, DOA3, DOA2, DOA1, DOA0} = dout;

  initial begin
    if (DATA_WIDTH_A != 36 || DATA_WIDTH_B != 36 || REGMODE_A != REGMODE_B ||
        (REGMODE_B != "NOREG" && REGMODE_B != "OUTREG") ||
        CSDECODE_A != "0b000" || CSDECODE_B != "0b000") begin
      $display("DP16KD model: configuration not modelled (36-bit pseudo dual port only)");
      $finish;
    end
  end

  always @(posedge CLKA) begin
    if (CEA && WEA && !{CSA2, CSA1, CSA0}) begin
      if (byte_en[0]) mem[waddr][8:0] <= din[8:0];
      if (byte_en[1]) mem[waddr][17:9] <= din[17:9];
      if (byte_en[2]) mem[waddr][26:18] <= din[26:18];
      if (byte_en[3]) mem[waddr][35:27] <= din[35:27];
    end
  end

  always @(posedge CLKB) begin
    if (CEB && !{CSB2, CSB1, CSB0}) latch <= mem[raddr];
    if (OCEB) oreg <= latch;
  end

  always @(posedge RSTA or posedge RSTB) begin
    $display("DP16KD model: RSTA/RSTB not modelled");
    $finish;
  end
endmodule
