"""faceweave.analysis"""
