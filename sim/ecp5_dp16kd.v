// Simulation model of the ECP5 DP16KD block RAM in the two configurations mmfree instantiates
// (mmfree.hw.ecp5.dp16kd_ram):
//   DATA_WIDTH_A = DATA_WIDTH_B = 36: pseudo dual port, 512 words. Port A writes: address
//     ADA13..ADA5, data {DIB17..DIB0, DIA17..DIA0}, byte enables ADA3..ADA0 (bits 8:0, 17:9, 26:18,
//     35:27), when CEA and WEA at the rising edge of CLKA. Port B reads ADB13..ADB5; the word leaves
//     on {DOB, DOA}.
//   DATA_WIDTH_A = DATA_WIDTH_B = 18: true dual port used as simple dual port, 1,024 words. Port A
//     writes: address ADA13..ADA4, data DIA17..DIA0, byte enables ADA1..ADA0 (bits 8:0, 17:9), when
//     CEA and WEA; WEB must stay low. Port B reads ADB13..ADB4; the word leaves on DOB (DOA, port A's
//     read data, is not modelled and stays 0).
//   In both, port B reads when CEB at the rising edge of CLKB, into the data latch;
//     REGMODE_A = REGMODE_B = "NOREG": the outputs are the latch; both "OUTREG": a register loaded from
//     the latch at the rising edge of CLKB when OCEB (mmfree drives CLKA and CLKB with one clock and
//     OCEA and OCEB alike, so which of them clocks the half on DOA is immaterial and not modelled).
//   A read of the address written in the same clock returns a word of junk (0x5A5A5A5A5, not the
//     old word nor the new one: on the device it is undefined), so that a design that uses such a
//     word fails its simulation.
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

  localparam WIDE = DATA_WIDTH_A == 36;
  localparam ABITS = WIDE ? 9 : 10;
  wire [17:0] dia = {DIA17, DIA16, DIA15, DIA14, DIA13, DIA12, DIA11, DIA10, DIA9, DIA8, DIA7, DIA6, DIA5, DIA4, DIA3, DIA2, DIA1, DIA0};
  wire [17:0] dib = {DIB17, DIB16, DIB15, DIB14, DIB13, DIB12, DIB11, DIB10, DIB9, DIB8, DIB7, DIB6, DIB5, DIB4, DIB3, DIB2, DIB1, DIB0};
  wire [13:0] ada = {ADA13, ADA12, ADA11, ADA10, ADA9, ADA8, ADA7, ADA6, ADA5, ADA4, ADA3, ADA2, ADA1, ADA0};
  wire [13:0] adb = {ADB13, ADB12, ADB11, ADB10, ADB9, ADB8, ADB7, ADB6, ADB5, ADB4, ADB3, ADB2, ADB1, ADB0};
  wire [35:0] din = WIDE ? {dib, dia} : {18'd0, dia};
  wire [ABITS-1:0] waddr = ada[13:14-ABITS];
  wire [ABITS-1:0] raddr = adb[13:14-ABITS];
  wire [3:0] byte_en = WIDE ? ada[3:0] : {2'b00, ada[1:0]};

  reg [35:0] mem [0:(1<<ABITS)-1];
  reg [35:0] latch = 36'd0;
  reg [35:0] oreg = 36'd0;
  wire [35:0] dout = (REGMODE_B == "OUTREG") ? oreg : latch;
  assign {DOB17, DOB16, DOB15, DOB14, DOB13, DOB12, DOB11, DOB10, DOB9, DOB8, DOB7, DOB6, DOB5, DOB4, DOB3, DOB2, DOB1, DOB0} =
         WIDE ? dout[35:18] : dout[17:0];
  assign {DOA17, DOA16, DOA15, DOA14, DOA13, DOA12, DOA11, DOA10, DOA9, DOA8, DOA7, DOA6, DOA5, DOA4, DOA3, DOA2, DOA1, DOA0} =
         WIDE ? dout[17:0] : 18'd0;

  initial begin
    if ((DATA_WIDTH_A != 36 && DATA_WIDTH_A != 18) || DATA_WIDTH_B != DATA_WIDTH_A ||
        REGMODE_A != REGMODE_B || (REGMODE_B != "NOREG" && REGMODE_B != "OUTREG") ||
        CSDECODE_A != "0b000" || CSDECODE_B != "0b000") begin
      $display("DP16KD model: configuration not modelled (36-bit pseudo dual port or 18-bit simple dual port only)");
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
    if (!WIDE && WEB) begin
      $display("DP16KD model: writes on port B not modelled");
      $finish;
    end
    if (CEB && !{CSB2, CSB1, CSB0})
      latch <= (CEA && WEA && byte_en != 4'd0 && !{CSA2, CSA1, CSA0} && waddr == raddr) ? 36'h5A5A5A5A5 : mem[raddr];
    if (OCEB) oreg <= latch;
  end

  always @(posedge RSTA or posedge RSTB) begin
    $display("DP16KD model: RSTA/RSTB not modelled");
    $finish;
  end
endmodule
