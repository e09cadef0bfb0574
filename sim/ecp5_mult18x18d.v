// Simulation model of the ECP5 MULT18X18D multiplier in the configurations mmfree instantiates
// (mmfree.hw.ecp5.mult18x18d; Yosys' own product mapping uses the same block with no registers):
//   P = A * B over 36 bits, A and B signed when SIGNEDA / SIGNEDB are high, unsigned when low.
//   REG_INPUTA_CLK, REG_INPUTB_CLK, REG_OUTPUT_CLK each "NONE" (no register) or "CLK0" (a register
//   clocked by CLK0, loading when CE0 (the output register: REG_OUTPUT_CE "CE0" or "CE1"), cleared
//   at the clock edge while RST0 is high: RESETMODE "SYNC"; mmfree keeps the clock enables high
//   while its reset is held, so whether RST0 needs them is immaterial).
//   REG_INPUTC_CLK and REG_PIPELINE_CLK must be "NONE", SOURCEA and SOURCEB low (operands from A and
//   B, not the shift chain); the C input, the CLK1..3 / CE1..3 / RST1..3 pins and the shift and
//   cascade outputs are not modelled (outputs stay 0).
// Any other configuration stops the simulation: this model does not describe it.
module MULT18X18D(
  input A17, A16, A15, A14, A13, A12, A11, A10, A9, A8, A7, A6, A5, A4, A3, A2, A1, A0,
  input B17, B16, B15, B14, B13, B12, B11, B10, B9, B8, B7, B6, B5, B4, B3, B2, B1, B0,
  input C17, C16, C15, C14, C13, C12, C11, C10, C9, C8, C7, C6, C5, C4, C3, C2, C1, C0,
  input SIGNEDA, SIGNEDB, SOURCEA, SOURCEB,
  input CLK3, CLK2, CLK1, CLK0, CE3, CE2, CE1, CE0, RST3, RST2, RST1, RST0,
  input SRIA17, SRIA16, SRIA15, SRIA14, SRIA13, SRIA12, SRIA11, SRIA10, SRIA9, SRIA8, SRIA7, SRIA6, SRIA5, SRIA4, SRIA3, SRIA2, SRIA1, SRIA0,
  input SRIB17, SRIB16, SRIB15, SRIB14, SRIB13, SRIB12, SRIB11, SRIB10, SRIB9, SRIB8, SRIB7, SRIB6, SRIB5, SRIB4, SRIB3, SRIB2, SRIB1, SRIB0,
  output SROA17, SROA16, SROA15, SROA14, SROA13, SROA12, SROA11, SROA10, SROA9, SROA8, SROA7, SROA6, SROA5, SROA4, SROA3, SROA2, SROA1, SROA0,
  output SROB17, SROB16, SROB15, SROB14, SROB13, SROB12, SROB11, SROB10, SROB9, SROB8, SROB7, SROB6, SROB5, SROB4, SROB3, SROB2, SROB1, SROB0,
  output ROA17, ROA16, ROA15, ROA14, ROA13, ROA12, ROA11, ROA10, ROA9, ROA8, ROA7, ROA6, ROA5, ROA4, ROA3, ROA2, ROA1, ROA0,
  output ROB17, ROB16, ROB15, ROB14, ROB13, ROB12, ROB11, ROB10, ROB9, ROB8, ROB7, ROB6, ROB5, ROB4, ROB3, ROB2, ROB1, ROB0,
  output ROC17, ROC16, ROC15, ROC14, ROC13, ROC12, ROC11, ROC10, ROC9, ROC8, ROC7, ROC6, ROC5, ROC4, ROC3, ROC2, ROC1, ROC0,
  output P35, P34, P33, P32, P31, P30, P29, P28, P27, P26, P25, P24, P23, P22, P21, P20, P19, P18,
  output P17, P16, P15, P14, P13, P12, P11, P10, P9, P8, P7, P6, P5, P4, P3, P2, P1, P0,
  output SIGNEDP
);
  parameter REG_INPUTA_CLK = "NONE";
  parameter REG_INPUTA_CE = "CE0";
  parameter REG_INPUTA_RST = "RST0";
  parameter REG_INPUTB_CLK = "NONE";
  parameter REG_INPUTB_CE = "CE0";
  parameter REG_INPUTB_RST = "RST0";
  parameter REG_INPUTC_CLK = "NONE";
  parameter REG_INPUTC_CE = "CE0";
  parameter REG_INPUTC_RST = "RST0";
  parameter REG_PIPELINE_CLK = "NONE";
  parameter REG_PIPELINE_CE = "CE0";
  parameter REG_PIPELINE_RST = "RST0";
  parameter REG_OUTPUT_CLK = "NONE";
  parameter REG_OUTPUT_CE = "CE0";
  parameter REG_OUTPUT_RST = "RST0";
  parameter CLK0_DIV = "ENABLED";
  parameter CLK1_DIV = "ENABLED";
  parameter CLK2_DIV = "ENABLED";
  parameter CLK3_DIV = "ENABLED";
  parameter HIGHSPEED_CLK = "NONE";
  parameter GSR = "ENABLED";
  parameter CAS_MATCH_REG = "FALSE";
  parameter SOURCEB_MODE = "B_SHIFT";
  parameter MULT_BYPASS = "DISABLED";
  parameter RESETMODE = "SYNC";

  localparam REG_A = REG_INPUTA_CLK == "CLK0";
  localparam REG_B = REG_INPUTB_CLK == "CLK0";
  localparam REG_P = REG_OUTPUT_CLK == "CLK0";

  wire [17:0] a = {A17, A16, A15, A14, A13, A12, A11, A10, A9, A8, A7, A6, A5, A4, A3, A2, A1, A0};
  wire [17:0] b = {B17, B16, B15, B14, B13, B12, B11, B10, B9, B8, B7, B6, B5, B4, B3, B2, B1, B0};
  reg [17:0] a_q = 18'd0;
  reg [17:0] b_q = 18'd0;
  reg sa_q = 1'b0;
  reg sb_q = 1'b0;
  reg [35:0] p_q = 36'd0;
  wire [17:0] a_m = REG_A ? a_q : a;
  wire [17:0] b_m = REG_B ? b_q : b;
  wire sa_m = REG_A ? sa_q : SIGNEDA;
  wire sb_m = REG_B ? sb_q : SIGNEDB;
  wire signed [35:0] a_ext = {{18{sa_m & a_m[17]}}, a_m};
  wire signed [35:0] b_ext = {{18{sb_m & b_m[17]}}, b_m};
  wire [35:0] prod = a_ext * b_ext;
  wire [35:0] p = REG_P ? p_q : prod;
  assign {P35, P34, P33, P32, P31, P30, P29, P28, P27, P26, P25, P24, P23, P22, P21, P20, P19, P18,
          P17, P16, P15, P14, P13, P12, P11, P10, P9, P8, P7, P6, P5, P4, P3, P2, P1, P0} = p;
  assign SIGNEDP = REG_A ? sa_q | sb_q : SIGNEDA | SIGNEDB;
  assign {SROA17, SROA16, SROA15, SROA14, SROA13, SROA12, SROA11, SROA10, SROA9, SROA8, SROA7, SROA6, SROA5, SROA4, SROA3, SROA2, SROA1, SROA0} = 18'd0;
  assign {SROB17, SROB16, SROB15, SROB14, SROB13, SROB12, SROB11, SROB10, SROB9, SROB8, SROB7, SROB6, SROB5, SROB4, SROB3, SROB2, SROB1, SROB0} = 18'd0;
  assign {ROA17, ROA16, ROA15, ROA14, ROA13, ROA12, ROA11, ROA10, ROA9, ROA8, ROA7, ROA6, ROA5, ROA4, ROA3, ROA2, ROA1, ROA0} = 18'd0;
  assign {ROB17, ROB16, ROB15, ROB14, ROB13, ROB12, ROB11, ROB10, ROB9, ROB8, ROB7, ROB6, ROB5, ROB4, ROB3, ROB2, ROB1, ROB0} = 18'd0;
  assign {ROC17, ROC16, ROC15, ROC14, ROC13, ROC12, ROC11, ROC10, ROC9, ROC8, ROC7, ROC6, ROC5, ROC4, ROC3, ROC2, ROC1, ROC0} = 18'd0;

  initial begin
    if ((REG_INPUTA_CLK != "NONE" && !REG_A) || (REG_INPUTB_CLK != "NONE" && !REG_B) ||
        (REG_OUTPUT_CLK != "NONE" && !REG_P) || REG_INPUTC_CLK != "NONE" || REG_PIPELINE_CLK != "NONE" ||
        (REG_A && (REG_INPUTA_CE != "CE0" || REG_INPUTA_RST != "RST0")) ||
        (REG_B && (REG_INPUTB_CE != "CE0" || REG_INPUTB_RST != "RST0")) ||
        (REG_P && ((REG_OUTPUT_CE != "CE0" && REG_OUTPUT_CE != "CE1") || REG_OUTPUT_RST != "RST0")) ||
        RESETMODE != "SYNC" || MULT_BYPASS != "DISABLED" || HIGHSPEED_CLK != "NONE") begin
      $display("MULT18X18D model: configuration not modelled (input A/B and output registers on CLK0/CE0/RST0, synchronous reset, or none)");
      $finish;
    end
  end

  always @(posedge CLK0) begin
    if (SOURCEA || SOURCEB) begin
      $display("MULT18X18D model: operands from the shift chain (SOURCEA/SOURCEB) not modelled");
      $finish;
    end
    if (RST0) begin
      a_q <= 18'd0; b_q <= 18'd0; sa_q <= 1'b0; sb_q <= 1'b0; p_q <= 36'd0;
    end else begin
      if (CE0) begin
        a_q <= a; b_q <= b; sa_q <= SIGNEDA; sb_q <= SIGNEDB;
      end
      if (REG_OUTPUT_CE == "CE1" ? CE1 : CE0) p_q <= prod;
    end
  end
endmodule
